# Sourced by the GPU kits (check.sh, train_builtin.sh), never run alone: install the
# carried wheels (.whl/, from `make gpu-wheels`) into a site folder and put it and the
# repo on PYTHONPATH. `install_carried_wheels NAME SKIP` (SKIP=1: a rehearsal on the CPU,
# which uses what is installed).
install_carried_wheels() {
  local name=$1 skip=$2
  if [ "$skip" = 0 ] && compgen -G ".whl/*.whl" >/dev/null; then
    SITE=${KIT_SITE:-/tmp/site}
    echo "$name: installing $(ls .whl/*.whl | wc -l) carried wheel(s) into $SITE" >&2
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl; then
      export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
      echo "$name: wheel install failed; the parts that need diffusers (or torchao) will say so" >&2
    fi
  elif [ "$skip" = 0 ]; then
    echo "$name: no .whl/*.whl here (run 'make gpu-wheels' and carry .whl); using what is installed" >&2
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
}

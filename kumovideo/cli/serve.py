"""`kumo serve`: an HTTP server in OpenAI's Videos API shape (and a web page at /), with
models loaded once and kept warm. docs/serving.md is the API reference."""

from __future__ import annotations

import os
from pathlib import Path

from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.extras import require
from kumovideo.utils.numbers import check_whole

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve an OpenAI-style Videos API and a web page", description=__doc__)
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="DIR",
        help="pipeline folder to serve, named by its folder name (repeatable); default: the built-in "
        "kumo-shapes, kumo-shapes-turbo, kumo-shapes-lumina and kumo-shapes-frames",
    )
    p.add_argument(
        "--lora",
        action="append",
        default=None,
        metavar="[NAME=]PATH",
        help="a LoRA folder (kumo train dit with lora:) to serve as model NAME (default: the folder's name) on the "
        "served model it was trained from; repeatable, one copy of the base weights for all",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need an API key)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--data-dir", default=None, help="jobs database and clips (default: $KUMO_CACHE/serve)")
    p.add_argument(
        "--api-key",
        default=None,
        help="require Authorization: Bearer KEY on /v1 (default: $KUMO_API_KEY; needed off loopback)",
    )
    p.add_argument("--max-queue", type=int, default=16, help="jobs that may wait; more get 429 (default 16)")
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda:N or mps, or a comma-separated list (cuda:0,cuda:1): one worker and one copy of the models "
        "each (default: every CUDA GPU, else the CPU)",
    )
    p.add_argument("--no-warmup", action="store_true", help="skip the one-step warm-up clip per model at start")
    p.set_defaults(func=run)


def check_args(args) -> tuple[dict[str, Path], dict[str, tuple[Path, str]], Path, str | None]:
    """The served folders by name, the LoRAs by name (path, base), the data dir and the API
    key, as one-line errors."""

    from kumovideo.builtin import cache_dir

    for module in ("starlette", "uvicorn", "multipart"):
        require(module, "kumo serve")
    api_key = args.api_key if args.api_key is not None else os.environ.get("KUMO_API_KEY") or None
    if args.host not in LOOPBACK and not api_key:
        raise KumoInputError(
            f"--host {args.host} would expose the server beyond this machine; set --api-key "
            "(or KUMO_API_KEY) to require a key, or bind 127.0.0.1"
        )
    check_whole(args.port, "--port", low=0, high=65535)
    check_whole(args.max_queue, "--max-queue", high=100000)
    models = {}
    for folder in args.model or []:
        path = Path(folder)
        if not (path / "model_index.json").is_file():
            raise KumoInputError(f"--model {folder}: no model_index.json there; pass a pipeline folder")
        if path.resolve().name in models:
            raise KumoInputError(f"--model {folder}: two models named {path.resolve().name!r}; rename a folder")
        models[path.resolve().name] = path
    loras = {}
    if args.lora:
        from kumovideo.serve.worker import default_models

        loras = served_loras(args.lora, models or default_models())
    data_dir = Path(args.data_dir) if args.data_dir else cache_dir() / "serve"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KumoInputError(f"--data-dir {data_dir}: cannot create it ({exc.strerror})") from None
    return models, loras, data_dir, api_key


def served_loras(values: list[str], models: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    """`--lora [NAME=]PATH` values -> name -> (path, the served model it adapts: the one its
    kumo_lora.json names, by folder or by name; a bare .safetensors file goes on the first)."""
    from kumovideo.pipelines.lora import lora_base, lora_weights_file, require_peft

    loras: dict[str, tuple[Path, str]] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or Path(value).exists():  # a path may hold "="
            name, path = "", value
        lora_weights_file(path)  # a folder with the weights, or a .safetensors file
        require_peft()
        path = Path(path)
        name = name or (path.resolve().name if path.is_dir() else path.stem)
        if name in models or name in loras:
            raise KumoInputError(f"--lora {value}: the name {name!r} is taken; serve it as --lora OTHER_NAME={path}")
        recorded = lora_base(path) if path.is_dir() else None
        if recorded is None:
            base = next(iter(models))
        else:
            by_folder = [n for n, folder in models.items() if Path(folder).resolve() == Path(recorded).resolve()]
            base = (by_folder or [n for n in models if n == Path(recorded).name] or [None])[0]
            if base is None:
                raise KumoInputError(
                    f"--lora {value}: it adapts {recorded} (its kumo_lora.json), which is not served; "
                    f"add --model {recorded}"
                )
        loras[name] = (path, base)
    return loras


def serving_devices(names: str | None) -> list:
    """The devices that each get a worker and a copy of the models: `--device` (one, or a
    comma-separated list), else every CUDA GPU, else the CPU."""
    import torch

    from kumovideo.cli.args import resolve_device

    if names is None:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [torch.device(f"cuda:{i}") for i in range(count)] or [torch.device("cpu")]
    devices = [resolve_device(name.strip()) for name in names.split(",") if name.strip()]
    if not devices or len(set(devices)) != len(devices):
        raise KumoInputError(f"--device {names!r}: name each device once, e.g. cuda:0,cuda:1 or cpu")
    return devices


def run(args) -> int:
    folders, loras, data_dir, api_key = check_args(args)

    from kumovideo.serve.app import create_app, run_server
    from kumovideo.serve.jobs import JobStore
    from kumovideo.serve.limits import Limits
    from kumovideo.serve.worker import default_models, load_models, warm_up

    store = JobStore(data_dir)  # before the models load: a data dir another server holds is refused at once
    devices = serving_devices(args.device)
    replicas = [load_models(folders or default_models(), device, loras) for device in devices]
    infos = replicas[0][1]
    pipes = [replica for replica, _ in replicas]
    if not args.no_warmup:
        for replica in pipes:
            warm_up(replica, infos)
    app = create_app(store, pipes, infos, limits=Limits(max_queue=args.max_queue), api_key=api_key)
    run_server(app, args.host, args.port)
    return 0

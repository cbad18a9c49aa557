"""LoRA: a `lora:` DiT run trains only a peft adapter and ends with a LoRA folder that
`load_lora_weights`, `kumo generate --lora` and the transformer's `scale` apply
(kumovideo.training.lora, kumovideo.pipelines.lora)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from cli_checks import assert_one_line_error
from safetensors.torch import load_file

from kumovideo.cli import main
from kumovideo.pipelines import KumoPipeline
from kumovideo.pipelines.factory import build_pipeline
from kumovideo.utils.errors import KumoInputError

pytest.importorskip("peft")


def _latents(pipe, prompt: str = "a red circle moves left on a black background") -> torch.Tensor:
    call = dict(num_inference_steps=2, output_type="latent", generator=torch.Generator().manual_seed(0))
    return pipe(prompt, height=32, width=32, num_frames=9, **call).frames


def _config(tmp_path, base, cache, **overrides) -> str:
    settings = {
        "kind": "dit",
        "output_dir": str(tmp_path / "run"),
        "init_from": str(base),
        "lora": {"rank": 4, "alpha": 8, "target_modules": ["to_q", "to_k", "to_v", "to_out.0", "text_proj"]},
        "train_text_encoder": False,
        "lr": 1e-2,
        "warmup_steps": 1,
        "checkpoint_every": 100,
        "stages": [
            {"name": "s", "steps": 3, "size": 32, "num_frames": 9, "batch_size": 2, "latents": str(cache)},
        ],
        **overrides,
    }
    path = tmp_path / "lora.json"
    path.write_text(json.dumps(settings))
    return str(path)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A kumo-tiny base folder, a 4-clip latent cache and a 3-step LoRA run on it."""
    from kumovideo.training.latent_cache import cache_shapes_latents

    tmp = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    pipe = build_pipeline("kumo-tiny")
    with torch.no_grad():  # as if trained: DiT's zero-initialised gates would pass the adapter no gradient
        for param in pipe.transformer.parameters():
            param.add_(0.05 * torch.randn_like(param))
    pipe.save_pretrained(tmp / "base")
    cache_shapes_latents(pipe.vae, "vae", tmp / "cache", 4, 32, 9, seed=1, batch_size=4)
    assert main(["train", "dit", "--config", _config(tmp, tmp / "base", tmp / "cache" / "index.json")]) == 0
    return tmp


def _base(folder) -> KumoPipeline:
    pipe = KumoPipeline.from_pretrained(folder / "base")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_lora_run_trains_the_adapter_only_and_writes_a_lora_folder(lora_run):
    lora = lora_run / "run" / "lora"
    assert sorted(p.name for p in lora.iterdir()) == [
        "kumo_lora.json",
        "pytorch_lora_weights.safetensors",
        "training_captions.txt",
    ]
    assert not (lora_run / "run" / "pipeline").exists()  # the base is not copied
    info = json.loads((lora / "kumo_lora.json").read_text())
    assert info["base"] == str(lora_run / "base") and info["rank"] == 4 and info["alpha"] == 8
    weights = load_file(str(lora / "pytorch_lora_weights.safetensors"))
    assert weights and all(k.startswith("transformer.") and ".lora_" in k for k in weights)
    # The B matrices start at zero; three steps at lr 1e-2 moved them.
    assert any(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k)
    # Every block's attention projections and the text projection carry an adapter, nothing else.
    targets = {k.split(".lora_")[0].removeprefix("transformer.") for k in weights}
    assert "patch_embed.text_proj" in targets and all(
        t.endswith(("to_q", "to_k", "to_v", "to_out.0", "text_proj")) for t in targets
    )


def test_the_lora_folder_loads_back_scales_and_fuses(lora_run):
    pipe = _base(lora_run)
    base = _latents(pipe)
    pipe.load_lora_weights(lora_run / "run" / "lora", adapter_name="t")
    adapted = _latents(pipe)
    assert not torch.allclose(adapted, base, atol=1e-4)
    pipe.set_adapters(["t"], [0.0])
    torch.testing.assert_close(_latents(pipe), base, atol=1e-5, rtol=1e-5)
    pipe.set_adapters(["t"], [1.0])
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()  # the update stays in the weights, the adapter layers go
    torch.testing.assert_close(_latents(pipe), adapted, atol=1e-4, rtol=1e-4)


def test_the_transformer_takes_a_lora_scale_for_one_call(lora_run):
    pipe = _base(lora_run)
    pipe.load_lora_weights(lora_run / "run" / "lora")
    model = pipe.transformer
    x = torch.randn(1, 3, 4, 4, 4)
    text = torch.randn(1, model.config.max_text_seq_length, model.config.text_embed_dim)
    t = torch.tensor([500])
    full = model(x, text, t).sample
    off = model(x, text, t, attention_kwargs={"scale": 0.0}).sample
    pipe.unload_lora_weights()
    torch.testing.assert_close(off, model(x, text, t).sample)  # scale 0: the base
    assert not torch.allclose(full, off)
    with pytest.raises(KumoInputError, match="only a LoRA 'scale'"):
        model(x, text, t, attention_kwargs={"bogus": 1})


def test_kumo_generate_applies_a_lora_and_scale_zero_is_the_base(lora_run, tmp_path):
    base, lora = str(lora_run / "base"), str(lora_run / "run" / "lora")
    common = ["a red circle", "--model", base, "--steps", "2", "--height", "32", "--width", "32", "--frames", "9"]
    assert main(["generate", *common, "-o", str(tmp_path / "plain.gif")]) == 0
    assert main(["generate", *common, "--lora", lora, "--lora-scale", "0", "-o", str(tmp_path / "zero.gif")]) == 0
    assert main(["generate", *common, "--lora", lora, "-o", str(tmp_path / "lora.gif")]) == 0
    plain = (tmp_path / "plain.gif").read_bytes()
    assert (tmp_path / "zero.gif").read_bytes() == plain
    assert (tmp_path / "lora.gif").read_bytes() != plain


@pytest.mark.parametrize(
    "change, needles",
    [
        ({"init_from": None, "preset": "kumo-tiny"}, ["a LoRA adapts a trained model", "init_from"]),
        ({"train_text_encoder": True}, ["trains the adapter only", "train_text_encoder: false"]),
        ({"lora": {"rank": 0}}, ["lora.rank=0", ">= 1"]),
        ({"lora": {"rnak": 4}}, ["unknown key(s) rnak", "rank"]),
        ({"lora": {"target_modules": ["to_qq"]}}, ["to_qq name no linear layer", "to_q"]),
    ],
)
def test_a_bad_lora_config_exits_2_with_one_line(lora_run, tmp_path, capsys, change, needles):
    path = _config(tmp_path, lora_run / "base", lora_run / "cache" / "index.json", **change)
    capsys.readouterr()
    assert main(["train", "dit", "--config", path]) == 2
    assert_one_line_error(capsys, *needles)


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--lora", "missing-folder"], ["missing-folder not found"]),
        (["--lora-scale", "0.5"], ["needs --lora"]),
        (["--lora", "{lora}", "--lora-scale", "3"], ["LoRA scale 3.0", "0 (the base model) to 2"]),
        (["--lora", "{weights_bin}"], ["not a .safetensors file"]),
        (["--lora", "{empty}"], ["has no pytorch_lora_weights.safetensors"]),
    ],
)
def test_bad_lora_flags_exit_2_before_any_model_loads(lora_run, tmp_path, capsys, flags, needles):
    (tmp_path / "w.bin").write_bytes(b"not weights")
    (tmp_path / "empty").mkdir()
    names = {"lora": lora_run / "run" / "lora", "weights_bin": tmp_path / "w.bin", "empty": tmp_path / "empty"}
    flags = [f.format(**names) for f in flags]
    output = tmp_path / "x.mp4"
    assert main(["generate", "a red circle", *flags, "-o", str(output)]) == 2
    assert_one_line_error(capsys, *needles)
    assert not output.exists()


def test_a_lora_for_another_transformer_is_one_line(lora_run):
    """The kumo-tiny LoRA into the built-in model (another width): refused, nothing half-loaded."""
    from kumovideo.builtin import builtin_model_dir

    pipe = KumoPipeline.from_pretrained(builtin_model_dir(False, False), torch_dtype=torch.float32)
    with pytest.raises(KumoInputError, match="does not fit this model's transformer"):
        pipe.load_lora_weights(lora_run / "run" / "lora")
    assert not getattr(pipe.transformer, "peft_config", None)  # diffusers took the injected layers out


def test_kumo_eval_shapes_judges_a_model_with_a_lora(lora_run, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "shapes", "--model", str(lora_run / "base"), "--n", "2", "--steps", "2", "--out", str(out)]
    assert main([*args, "--lora", str(lora_run / "run" / "lora"), "--held-back"]) == 0
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["lora"] == str(lora_run / "run" / "lora") and summary["held_back"] == "cyan"
    assert summary["n"] == 2


def test_a_lora_folder_can_bring_the_vae_its_concept_needs(lora_run, tmp_path):
    """`lora: {vae: FOLDER}` (a colour the base's decoder cannot draw): the folder carries that
    VAE as vae/, and loading the LoRA puts it in the pipeline; its caption list holds only the
    captions its base did not train on."""
    import types

    from kumovideo.training.config import lora_settings
    from kumovideo.training.lora import add_lora_adapter, write_lora_folder

    pipe = _base(lora_run)
    (lora_run / "base" / "training_captions.txt").write_text("a red circle moves left on a black background\n")
    settings = lora_settings({"rank": 2, "vae": str(lora_run / "base" / "vae")}, "test")
    add_lora_adapter(pipe.transformer, settings)
    config = types.SimpleNamespace(lora=settings, init_from=str(lora_run / "base"))
    captions = "a cyan circle moves up on a navy background\na red circle moves left on a black background\n"
    folder = write_lora_folder(pipe.transformer, config, tmp_path / "lora", {"training_captions.txt": captions})
    (lora_run / "base" / "training_captions.txt").unlink()
    assert (folder / "vae" / "config.json").is_file()
    assert json.loads((folder / "kumo_lora.json").read_text())["vae"] == "vae"
    assert (folder / "training_captions.txt").read_text() == "a cyan circle moves up on a navy background\n"
    fresh = _base(lora_run)
    before = fresh.vae
    fresh.load_lora_weights(folder)
    assert fresh.vae is not before and fresh.vae.dtype == before.dtype
    with pytest.raises(KumoInputError, match="lora.vae"):
        lora_settings({"vae": str(tmp_path / "nowhere")}, "test")


def _served(lora_run, **loras):
    from kumovideo.serve.worker import load_models

    return load_models({"base": lora_run / "base"}, loras={k: (lora_run / v, "base") for k, v in loras.items()})


def _spec(**changes) -> dict:
    spec = dict(prompt="a red circle", negative_prompt=None, frames=9, height=32, width=32, steps=2)
    return {**spec, "guidance_scale": 4.0, "seed": 0, "lora": None, "lora_scale": None, **changes}


def test_kumo_serve_serves_a_lora_on_its_base_weights_switched_per_job(lora_run):
    """`kumo serve --lora`: the LoRA is a served model on its base's transformer (one copy);
    a base job after a LoRA job is the base exactly, the LoRA job is what the fused LoRA of
    `kumo generate --lora` makes, and scale 0 is the base."""
    pytest.importorskip("starlette")
    from kumovideo.serve.worker import generate

    plain = generate(_base(lora_run), _spec())
    pipes, infos = _served(lora_run, style="run/lora")
    assert pipes["style"].transformer is pipes["base"].transformer
    assert infos["style"].lora_of == "base" and infos["base"].lora_of is None
    adapted = generate(pipes["style"], _spec(lora="style", lora_scale=1.0))
    assert (generate(pipes["base"], _spec()) == plain).all()
    assert (adapted.astype(int) - plain).any()
    fused = _base(lora_run)
    fused.load_lora_weights(lora_run / "run" / "lora")
    fused.fuse_lora(lora_scale=1.0)
    fused.unload_lora_weights()  # as `kumo generate --lora` does
    assert abs(generate(fused, _spec()).astype(int) - adapted).max() <= 1  # fused vs unfused: float rounding
    assert (generate(pipes["style"], _spec(lora="style", lora_scale=0.0)) == plain).all()


def test_the_videos_api_routes_to_a_served_lora_and_checks_its_scale(lora_run, tmp_path):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from kumovideo.serve.app import create_app
    from kumovideo.serve.jobs import JobStore

    pipes, infos = _served(lora_run, style="run/lora")
    with TestClient(create_app(JobStore(tmp_path), pipes, infos, start_worker=False)) as client:
        models = client.get("/v1/models").json()
        assert [(m["id"], m["parent"]) for m in models["data"]] == [("base", None), ("style", "base")]
        assert client.get("/v1/models/style").json()["object"] == "model"
        missing = client.get("/v1/models/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        assert client.post("/v1/videos", json={"prompt": "a red circle"}).json()["model"] == "base"  # never routed
        assert client.post("/v1/videos", json={"prompt": "p", "model": "style"}).json()["model"] == "style"
        for body, needle in (
            ({"model": "style", "lora_scale": 3}, "LoRA scale 3"),
            ({"model": "style", "lora_scale": "lots"}, "LoRA scale 'lots'"),
            ({"lora_scale": 0.5}, "'base' is not one (LoRAs: 'style')"),
        ):
            response = client.post("/v1/videos", json={"prompt": "a red circle", **body})
            error = response.json()["error"]
            assert response.status_code == 400 and error["param"] == "lora_scale" and needle in error["message"]
    from kumovideo.serve.limits import Limits
    from kumovideo.serve.params import parse_create

    spec = parse_create({"prompt": "p", "model": "style", "lora_scale": "0.5"}, infos, "base", Limits())
    assert (spec["lora"], spec["lora_scale"]) == ("style", 0.5)


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--lora", "missing-folder"], ["missing-folder not found"]),
        (["--lora", "base={lora}"], ["the name 'base' is taken", "--lora OTHER_NAME="]),
        (["--lora", "{lora}", "--lora", "{lora}"], ["the name 'lora' is taken"]),
        (["--lora", "{elsewhere}"], ["adapts /nowhere/kumo-x", "which is not served", "--model /nowhere/kumo-x"]),
    ],
)
def test_bad_serve_lora_flags_exit_2_before_any_model_loads(lora_run, tmp_path, capsys, flags, needles):
    pytest.importorskip("starlette")
    import shutil

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(lora_run / "run" / "lora", elsewhere)
    info = json.loads((elsewhere / "kumo_lora.json").read_text())
    (elsewhere / "kumo_lora.json").write_text(json.dumps({**info, "base": "/nowhere/kumo-x"}))
    names = {"lora": lora_run / "run" / "lora", "elsewhere": elsewhere}
    flags = [f.format(**names) for f in flags]
    assert main(["serve", "--model", str(lora_run / "base"), "--data-dir", str(tmp_path / "d"), *flags]) == 2
    assert_one_line_error(capsys, *needles)


def test_kumo_bench_times_a_lora_unfused_beside_the_eager_model(lora_run, capsys):
    """`kumo bench --lora`: a `lora` row (the adapter unfused, as `kumo serve --lora` runs it)
    beside the eager one, on the same noise; its latents differ (the adapter acts), at scale 0
    they do not."""
    from kumovideo.perf.bench import BenchSpec, run_bench

    lora = str(lora_run / "run" / "lora")
    spec = BenchSpec(preset="kumo-tiny", height=32, width=32, frames=9, steps=2, runs=1, warmup=1, device="cpu")
    result = run_bench(dataclasses.replace(spec, threads=1, lora=lora))
    rows = {r["row"]: r for r in result["rows"]}
    assert set(rows) == {"eager", "lora"} and rows["lora"]["step_s"]["median"] > 0
    assert rows["lora"]["final_latents_rel_diff_vs_eager"] > 1e-4
    zero = run_bench(dataclasses.replace(spec, threads=1, lora=lora, lora_scale=0.0, e2e=False))
    assert {r["row"]: r for r in zero["rows"]}["lora"]["final_latents_rel_diff_vs_eager"] == 0
    capsys.readouterr()
    assert main(["bench", "--preset", "kumo-tiny", "--lora", "missing-lora"]) == 2
    assert_one_line_error(capsys, "missing-lora not found")

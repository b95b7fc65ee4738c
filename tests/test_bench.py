"""The benchmark suite (gsg.bench): correctness of what it measures and reports, never its timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gsg.bench import BENCHES, accuracy, datapath, epoch, format_report, knn, steps
from gsg.bench.report import interleaved_times, ratios, summarize_times, table
from gsg.train.loop import Trainer

# ------------------------------------------------------------------ one quick run of each bench, shared


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def results(one_thread: Any) -> dict[str, dict[str, Any]]:
    torch.manual_seed(0)
    extra: dict[str, dict[str, Any]] = {"steps": {"compare_layout": True}, "datapath": {"chunk": 8}}
    return {name: fn(quick=True, device="cpu", **extra.get(name, {})) for name, fn in BENCHES.items()
            if name != "cpuscale"}  # tests/test_bench_cpuscale.py runs and checks that one


def test_every_bench_is_registered_and_reports_the_machine(results: dict[str, dict[str, Any]]) -> None:
    assert set(BENCHES) == {"steps", "datapath", "knn", "accuracy", "epoch", "cpuscale"}
    for name, res in results.items():
        m = res["machine"]
        for key in ("cpu", "cores", "torch", "device_name", "torch_threads", "load_avg_1min", "load_avg_end"):
            assert key in m, (name, key)
        assert m["torch"] == torch.__version__ and m["device"] == "cpu" and m["cores"] >= 1
        assert res["options"]["quick"] is True


def _leaves(value: Any, out: list[Any]) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _leaves(v, out)
    elif isinstance(value, list | tuple) and value and isinstance(value[0], dict):
        for v in value:
            _leaves(v, out)
    else:
        out.append(value)


def test_format_report_renders_every_field(results: dict[str, dict[str, Any]]) -> None:
    for name, res in results.items():
        text = format_report(name, res)
        assert text.startswith(f"### gsg bench {name}")
        assert res["machine"]["cpu"] in text and res["machine"]["torch"] in text
        for key in res["options"]:
            assert f"`{key}=" in text, (name, key)
        for title, rows in res["tables"].items():
            assert title in text
            header = next(line for line in text.splitlines() if line.startswith("| ") and all(
                c in line for c in rows[0]))
            assert header.count("|") == len(rows[0]) + 1
            assert sum(line.startswith("| ") for line in text.splitlines()) >= len(rows) + 1
        for key, value in res.items():  # every other top-level field, flattened
            if key in ("machine", "options", "tables", "raw", "runs"):
                continue
            assert key in text, (name, key)
            leaves: list[Any] = []
            _leaves(value, leaves)
            assert leaves


def test_table_formats_numbers_and_missing_values() -> None:
    md = table([{"a": 1.23456, "b": None}, {"a": 12345.6, "c": True}])
    lines = md.strip().splitlines()
    assert lines[0] == "| a | b | c |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| 1.23 | — | — |" and lines[3] == "| 12,346 | — | yes |"


# ------------------------------------------------------------------ timing helpers and ratios


def test_ratios_and_medians_from_given_timings() -> None:
    assert ratios({"sym": 2.0, "reuse": 2.1, "fresh": 4.0}, "sym") == pytest.approx(
        {"sym": 1.0, "reuse": 1.05, "fresh": 2.0})
    s = summarize_times([5.0, 1.0, 3.0, 100.0, 2.0])
    assert s["median_s"] == 3.0 and s["min_s"] == 1.0 and s["max_s"] == 100.0 and s["n"] == 5
    times = {"simsiam symmetric": [0.2, 0.4, 0.2], "simsiam guided reuse": [0.21, 0.42, 0.21],
             "simsiam guided fresh": [0.4, 0.8, 0.4], "byol symmetric": [0.25] * 3, "byol guided fresh": [0.5] * 3}
    rows = steps.compute_table(times, {"simsiam symmetric": 2, "simsiam guided fresh": 4})
    by = {r["variant"]: r for r in rows}
    assert by["simsiam guided reuse"]["ratio to symmetric (paired)"] == pytest.approx(1.05)
    assert by["simsiam guided reuse"]["ratio of medians"] == pytest.approx(1.05)
    assert by["simsiam guided fresh"]["ratio to symmetric (paired)"] == pytest.approx(2.0)
    assert by["byol guided fresh"]["ratio to symmetric (paired)"] == pytest.approx(2.0)  # per method
    assert by["simsiam guided fresh"]["median step ms"] == pytest.approx(400.0)
    assert by["simsiam guided fresh"]["encoder passes"] == 4 and by["byol symmetric"]["encoder passes"] is None


def test_paired_ratio_cancels_a_slow_round() -> None:
    # Round 3 ran the variant while the machine was idle and the baseline while it was loaded: a per-round
    # ratio of 0.1 there, but the median over rounds stays at the typical 1.1. The ratio of medians does not.
    sym, var = [1.0, 2.0, 10.0], [1.1, 2.2, 1.0]
    assert steps.paired_ratio(var, sym)["median"] == pytest.approx(1.1)
    res = steps.tabulate({"raw": {"simsiam symmetric": sym, "simsiam guided reuse": var}})
    assert res["simsiam_reuse_over_symmetric"] == pytest.approx(1.1)
    assert res["simsiam_reuse_meets_target_1.05"] is False
    row = next(r for r in res["tables"]["Median step time (round-robin)"] if r["variant"] == "simsiam guided reuse")
    assert row["ratio of medians"] == pytest.approx(1.1 / 2.0)


def test_interleaved_times_round_robin_with_rotation() -> None:
    order: list[str] = []
    fns = {n: (lambda n=n: order.append(n)) for n in "abc"}
    times = interleaved_times(fns, repeats=3, warmup=1)
    assert order == list("abc") + list("abc") + list("bca") + list("cab")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)


# ------------------------------------------------------------------ steps


def test_step_variants_differ_in_encoder_passes(results: dict[str, dict[str, Any]]) -> None:
    passes = results["steps"]["encoder_passes"]
    assert passes == {"simsiam symmetric": 2, "simsiam guided reuse": 2, "simsiam guided fresh": 4,
                      "byol symmetric": 2, "byol guided reuse": 2, "byol guided fresh": 4,
                      "simsiam guided reuse (NCHW)": 2}
    rows = {r["variant"]: r for r in results["steps"]["tables"]["Median step time (round-robin)"]}
    assert rows["simsiam guided reuse (NCHW)"]["memory format"] == "NCHW"
    assert rows["simsiam guided reuse"]["memory format"] == "channels-last"
    raw = results["steps"]["raw"]
    assert results["steps"]["channels_last_speedup"] == pytest.approx(
        steps.paired_ratio(raw["simsiam guided reuse (NCHW)"], raw["simsiam guided reuse"])["median"])
    assert results["steps"]["simsiam_reuse_over_symmetric"] == pytest.approx(
        steps.paired_ratio(raw["simsiam guided reuse"], raw["simsiam symmetric"])["median"])
    assert len(results["steps"]["raw"]["byol guided fresh"]) == results["steps"]["options"]["repeats"]
    loss_rows = {r["policy"]: r for r in results["steps"]["tables"][
        "Stop-gradient loss alone (forward + backward), batch x proj_dim"]}
    assert results["steps"]["guided_loss_extra_ms"] == pytest.approx(
        loss_rows["guided"]["median ms"] - loss_rows["symmetric"]["median ms"])


@pytest.mark.parametrize("method,policy,views", [("simsiam", "guided", "reuse"), ("byol", "guided", "fresh")])
def test_bench_step_is_the_training_loop_step(tmp_path: Path, method: str, policy: str, views: str) -> None:
    """train_step on the loader's first batch leaves the weights bit-identical to Trainer.fit's first step."""
    sizes = steps.model_defaults(torch.device("cpu"), quick=True)

    def make(out: str) -> Trainer:
        cfg = steps.bench_config(tmp_path / out, method=method, stop_gradient=policy, views=views,
                                 device=torch.device("cpu"), **sizes)
        cfg.run.limit_batches = 1
        return Trainer(cfg)

    ref = make("fit")
    ref.fit()
    ours = make("bench")
    ours.model.train()
    steps.train_step(ours)(steps.first_batch(ours))
    want, got = ref.model.state_dict(), ours.model.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k


# ------------------------------------------------------------------ data path


def test_reference_and_batched_pipelines_give_same_shaped_views() -> None:
    images = datapath.random_images(3, 40)
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    for recipe, size in (("cifar", 32), ("imagenet", 32)):
        ds = datapath.TwoViewPIL(hwc, datapath.torchvision_transform(recipe, size))
        v1, v2 = ds[0]
        assert v1.shape == v2.shape == (3, size, size) and v1.dtype == torch.float32
        assert not torch.equal(v1, v2)  # two independent draws
    ref = datapath.reference_throughput(images, "cifar", 32, batch_size=2, workers=0, batches=2)
    assert ref["views"] == 8 and ref["images_per_s"] > 0


def test_datapath_reports_throughput_and_share(results: dict[str, dict[str, Any]]) -> None:
    res = results["datapath"]
    pipelines = {(r["recipe"], r["pipeline"]) for r in res["tables"]["Augmentation throughput (two views per image)"]}
    for recipe in ("cifar", "imagenet"):
        assert (recipe, "ours") in pipelines and (recipe, "torchvision, 1 core (workers=0)") in pipelines
        assert (recipe, "ours (chunks of 8)") in pipelines
        assert res["throughput"][f"{recipe}.ours_over_torchvision_per_core"] > 0
    assert 0 < res["augmentation_share"] < 1


# ------------------------------------------------------------------ kNN


def test_knn_matches_sklearn_on_a_small_problem() -> None:
    xtr, ytr, xte, _ = knn.clustered_features(600, 150, 16, 5, seed=3)
    for k, t in ((1, None), (25, 0.1), (600, 0.05)):
        cmp = knn.compare(xtr, ytr, xte, 5, k, t, torch.device("cpu"))
        assert cmp["identical"], (k, t, cmp["disagreements"])
        assert torch.equal(cmp["ours"], cmp["sklearn"])


def test_knn_bench_agreement(results: dict[str, dict[str, Any]]) -> None:
    agree = results["knn"]["agreement"]
    assert set(agree) == {"k=200 weighted (T=0.1)", "k=1"}
    for a in agree.values():
        assert a["identical"] and a["mismatches"] == 0 and a["speedup"] > 0
        assert 20 < a["accuracy_pct"] <= 100  # clustered, not random labels


# ------------------------------------------------------------------ accuracy at equal cost


def _history(times: list[float], accs: list[float]) -> list[dict[str, float]]:
    return [{"epoch_time_s": t, "knn_k200": a} for t, a in zip(times, accs, strict=True)]


def test_curves_and_interpolation() -> None:
    times, vals = accuracy.run_curve(_history([1.0, 1.0, 2.0], [10.0, 20.0, 40.0]), "knn_k200")
    assert times == [1.0, 2.0, 4.0] and vals == [10.0, 20.0, 40.0]
    assert accuracy.interpolate_at(times, vals, 3.0) == pytest.approx(30.0)
    assert accuracy.interpolate_at(times, vals, 0.5) is None  # before the first evaluation
    assert accuracy.interpolate_at(times, vals, 10.0) == 40.0  # no extrapolation past the end


def test_summary_compares_at_equal_epochs_and_equal_time() -> None:
    runs = []
    for seed, shift in ((0, 0.0), (1, 1.0)):
        runs += [
            {"seed": seed, "mode": "reuse", "epochs": 2, "history": _history([1.0, 1.0], [50 + shift, 60 + shift])},
            {"seed": seed, "mode": "fresh", "epochs": 2, "history": _history([2.0, 2.0], [55 + shift, 65 + shift])},
            {"seed": seed, "mode": "reuse_long", "epochs": 4,
             "history": _history([1.0] * 4, [50 + shift, 60 + shift, 66 + shift, 70 + shift])},
        ]
    s = accuracy.summarize(runs)
    assert s["equal_epochs_diff_reuse_minus_fresh"] == pytest.approx((-5.0, 0.0))
    # reuse ends at t=2; fresh's curve at t=2 is its first point, 55: 60 - 55
    assert s["equal_time_interp_diff_reuse_minus_fresh"] == pytest.approx((5.0, 0.0))
    assert s["equal_time_long_diff_reuse_long_minus_fresh"] == pytest.approx((5.0, 0.0))
    assert s["fresh_over_reuse_epoch_time"] == pytest.approx(2.0)
    assert s["modes"]["fresh"]["final_mean"] == pytest.approx(65.5)
    assert s["longer_training_gain_reuse_long_minus_reuse"] == pytest.approx((10.0, 0.0))
    # in units of reuse-epochs with a fresh epoch costing 1.5: reuse ends at 2, fresh's curve there is
    # 55 + (2 - 1.5) / 1.5 * 10 = 58.33 (seed 0)
    c = accuracy.summarize(runs, fresh_cost=1.5)
    assert c["equal_time_interp_diff_reuse_minus_fresh"][0] == pytest.approx(60 - (55 + 10 / 3))
    # fresh is better at equal epochs (beyond noise: identical differences) but worse at equal time
    assert accuracy.verdict(s).startswith("reuse (fresh is better by 5.00 points at equal epochs but not")


def test_verdict_is_cost_aware() -> None:
    base = {"seeds": [0, 1, 2], "fresh_over_reuse_epoch_time": 2.0}
    noise = {**base, "equal_epochs_diff_reuse_minus_fresh": (-0.5, 2.0),
             "equal_time_long_diff_reuse_long_minus_fresh": (-3.0, 0.1)}
    assert accuracy.verdict(noise).startswith("reuse (equal epochs")  # fresh not better beyond noise
    fresh_wins = {**base, "equal_epochs_diff_reuse_minus_fresh": (-2.0, 0.1),
                  "equal_time_long_diff_reuse_long_minus_fresh": (-1.0, 0.1)}
    assert accuracy.verdict(fresh_wins).startswith("fresh (better by 2.00")
    one_seed = {**fresh_wins, "seeds": [0]}
    assert accuracy.verdict(one_seed).startswith("reuse")  # one seed cannot show a difference beyond noise


def test_accuracy_quick_run_records_curves(results: dict[str, dict[str, Any]]) -> None:
    res = results["accuracy"]
    modes = {(r["mode"], r["epochs"]) for r in res["runs"]}
    assert modes == {("reuse", 1), ("fresh", 1), ("reuse_long", 2)}
    for r in res["runs"]:
        assert len(r["history"]) == r["epochs"]
        assert all("knn_k200" in h and h["epoch_time_s"] > 0 for h in r["history"])
    assert res["verdict"].split()[0] in ("reuse", "fresh")


# ------------------------------------------------------------------ epoch (the GPU path, tiny on CPU)


def test_epoch_bench_runs_the_gpu_style_path_on_cpu(results: dict[str, dict[str, Any]]) -> None:
    res = results["epoch"]
    opts = res["options"]
    assert opts["amp"] == "bf16" and opts["channels_last"] is True and opts["limit_batches"] == 2
    assert len(res["gsg_epoch_times_s"]) == opts["warmup_epochs"] + opts["epochs"]
    assert res["gsg_s_per_epoch"] > 0 and res["reference_s_per_epoch"] > 0
    assert res["speedup_vs_reference"] == pytest.approx(res["reference_s_per_epoch"] / res["gsg_s_per_epoch"])
    assert res["extrapolated"] is True  # 2 of 4 steps timed, scaled to the full epoch


def test_epoch_config_carries_the_fast_path_options(tmp_path: Path) -> None:
    cfg = epoch.epoch_config(tmp_path, device=torch.device("cpu"), dataset="synthetic", data_dir=None,
                             batch_size=512, epochs=3, width=0.125, proj_dim=16, pred_hidden=8, amp="bf16",
                             channels_last=True, compile=True, views="reuse", limit_batches=None, image_size=None)
    assert (cfg.run.amp, cfg.run.channels_last, cfg.run.compile, cfg.data.on_device) == ("bf16", True, True, True)
    assert (cfg.run.knn_every, cfg.model.backbone, cfg.model.cifar_stem, cfg.ssl.stop_gradient) == (
        0, "resnet18", True, "guided")
    ds = epoch.synthetic_cifar(40)
    assert ds.images.shape == (40, 3, 32, 32) and ds.images.dtype == torch.uint8
    with epoch.dataset_override(ds):
        cfg.optim.batch_size = 8
        trainer = Trainer(cfg)
    assert trainer.train_ds is ds and len(trainer.loader) == 5 and trainer.recipe.name == "cifar"


def test_reference_step_trains_with_four_crops(tmp_path: Path) -> None:
    cfg = epoch.epoch_config(tmp_path, device=torch.device("cpu"), dataset="synthetic", data_dir=None,
                             batch_size=4, epochs=1, width=0.125, proj_dim=16, pred_hidden=8, amp="off",
                             channels_last=False, compile=False, views="fresh", limit_batches=None,
                             image_size=None)
    with epoch.dataset_override(epoch.synthetic_cifar(8)):
        trainer = Trainer(cfg)
    before = trainer.model.backbone.conv1.weight.detach().clone()
    views = [torch.randn(4, 3, 32, 32) for _ in range(4)]
    loss = epoch.reference_step(trainer, views)
    assert torch.isfinite(loss) and not torch.equal(before, trainer.model.backbone.conv1.weight)

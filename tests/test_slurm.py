"""The `slurm` profile: found by `--profile slurm` from the repository root, every key commented, site values
in one file; and, against the real single-node SLURM of ../shared/tools/local-slurm, jobs go through sbatch,
their outputs equal a local run's, both status commands work, and a failing job ends the run promptly."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from interpreter import PYTHON, PYTHON_BIN
from shared_data import SHARED, SHARED_DATASETS

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
LOCAL_SLURM = SHARED / "tools" / "local-slurm"


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Snakemake as a user runs it: from the repository root (where `--profile slurm` is looked up), with
    the repo's packages importable in the SLURM jobs (sbatch exports this environment)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{PYTHON_BIN}:{os.environ['PATH']}"}
    return subprocess.run([PYTHON, "-m", "snakemake", "--directory", str(workdir), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def job_resources(out: str, rule: str) -> list[str]:
    return re.findall(rf"rule {rule}:\n.*?resources: ([^\n]*)", out, re.S)


def test_profile_is_found_from_the_repo_root_and_every_key_is_commented(tmp_path: Path) -> None:
    assert (REPO / "slurm").resolve() == PROFILE.resolve()
    lines = (PROFILE / "config.yaml").read_text().splitlines()
    keys = [i for i, line in enumerate(lines) if re.match(r"^[a-z-]+:", line)]
    assert "executor: slurm" in lines and "slurm-requeue: true" in lines
    for i in keys:  # the key's own comment block sits right above it
        assert lines[i - 1].startswith("#"), f"profile key without a comment: {lines[i]}"
    result = snakemake(tmp_path, "-n", "--profile", "slurm", "--", "results/table1.csv")
    assert result.returncode == 0, result.stderr
    assert "Using profile slurm" in result.stdout + result.stderr


def test_site_values_reach_gpu_and_cpu_jobs(tmp_path: Path) -> None:
    site = write_yaml(tmp_path / "site.yaml", {"partition": "cpuq", "gpu_partition": "gpuq", "account": "lab",
                                               "gpu_model": "a100", "constraint": "a100|h100"})
    gpus = {"mem_mb": 8000, "runtime": 60, "gpus": 4, "nodes": 2, "cpus_per_gpu": 6}
    override = write_yaml(tmp_path / "override.yaml", {"slurm_site": site, "resources": {"pretrain": gpus}})
    result = snakemake(tmp_path, "-n", "--profile", "slurm", "--configfile", override, "--",
                       "results/prepare/proposals/coco/index.json",
                       "results/pretrain/mocov2-coco-resnet18-smoke-s0/backbone.pth")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    (pretrain,) = job_resources(out, "pretrain_run")
    # 4 GPUs over 2 nodes: one task per node with 2 GPUs x 6 cpus.
    for item in ("gpu=4", "nodes=2", "cpus_per_task=12", "gpu_model=a100", "constraint=a100|h100",
                 "slurm_partition=gpuq", "slurm_account=lab"):
        assert item in pretrain.split(", "), (item, pretrain)
    shards = job_resources(out, "proposals_shard")
    assert len(shards) == 2 and all("slurm_partition=cpuq" in r and "gpu" not in r for r in shards)


def test_unknown_site_key_names_the_key(tmp_path: Path) -> None:
    site = write_yaml(tmp_path / "site.yaml", {"partiton": "gpu"})
    override = write_yaml(tmp_path / "override.yaml", {"slurm_site": site})
    result = snakemake(tmp_path, "-n", "--profile", "slurm", "--configfile", override, "--", "results/table1.csv")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key (top level): Additional properties are not allowed ('partiton' was unexpected)" in out
    assert "site.schema.yaml" in out


# --- against a real cluster -------------------------------------------------------------------------------


def cluster_is_up() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def require(ready: bool, reason: str) -> None:
    """Skip a cluster test on a machine that cannot run it; in CI (`CI` set), fail instead: CI must run it."""
    if not ready:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the SLURM integration tests: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def local_slurm() -> Iterator[None]:
    """The local single-node SLURM with accounting; started here (and stopped after) only if not already up."""
    if cluster_is_up():
        yield
        return
    require(os.geteuid() == 0 and LOCAL_SLURM.is_dir(), f"needs root and {LOCAL_SLURM}")
    subprocess.run(["bash", str(LOCAL_SLURM / "start-local-slurm.sh")], check=True, timeout=900)
    yield
    subprocess.run(["bash", str(LOCAL_SLURM / "stop-local-slurm.sh")], check=True, timeout=300)


@pytest.fixture(scope="module")
def small_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Smoke config on the shared real data, with proposals on 96-px copies (a few seconds per shard)."""
    require(SHARED_DATASETS.is_dir(), f"{SHARED_DATASETS} not found")
    path = tmp_path_factory.mktemp("config") / "small.yaml"
    return write_yaml(path, {"datasets": {"source_root": str(SHARED_DATASETS)},
                             "prepare": {"proposals": {"max_side": 96}}})


# Status checks start after 2 s instead of the plugin's 40 (a 3-job chain: ~45 s instead of ~160 s).
FAST_STATUS = ("--slurm-init-seconds-before-status-checks", "2")
PROPOSALS = "results/prepare/proposals/coco/index.json"


def slurm_job_ids(out: str) -> list[str]:
    return re.findall(r"has been submitted with SLURM jobid (\d+)", out)


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("|") for line in out.splitlines())


def output_files(workdir: Path) -> dict[str, bytes]:
    """Every output below results/ except logs and benchmarks, with the workdir's own path taken out
    (image lists hold absolute paths)."""
    files = {}
    for path in sorted((workdir / "results").rglob("*")):
        rel = path.relative_to(workdir).as_posix()
        if path.is_file() and not rel.startswith(("results/logs/", "results/benchmarks/")):
            files[rel] = path.read_bytes().replace(str(workdir).encode(), b"<workdir>")
    return files


@pytest.mark.slurm
def test_jobs_go_through_sbatch_and_equal_a_local_run(local_slurm: None, small_config: str, tmp_path: Path) -> None:
    cluster, local = tmp_path / "cluster", tmp_path / "local"
    result = snakemake(cluster, "--profile", "slurm", "--configfile", small_config, *FAST_STATUS, "--", PROPOSALS)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # prepare_coco, the image list, and the two proposal shards as ONE grouped submission; shard_index local.
    job_ids = slurm_job_ids(out)
    assert len(job_ids) == 3, out
    assert "group_proposal_shards_proposals_shard" in out and re.search(r"localrule shard_index:", out)
    assert set(sacct_states(job_ids).values()) == {"COMPLETED"}
    result = snakemake(local, "--profile", "workflow/profiles/default", "--configfile", small_config, "--", PROPOSALS)
    assert result.returncode == 0, result.stderr
    cluster_files, local_files = output_files(cluster), output_files(local)
    assert any(name.endswith("shard-00001-of-00002.npz") for name in cluster_files)
    assert cluster_files == local_files


@pytest.mark.slurm
def test_squeue_status_command_sees_the_job_finish(local_slurm: None, small_config: str, tmp_path: Path) -> None:
    result = snakemake(tmp_path, "--profile", "slurm", "--configfile", small_config, *FAST_STATUS,
                       "--slurm-status-command", "squeue", "--", "results/prepare/coco/manifest.json")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    (job_id,) = slurm_job_ids(out)
    # MinJobAge keeps finished jobs in squeue, which is what lets this status command see them end.
    states = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert states == ["COMPLETED"]


@pytest.mark.slurm
def test_a_failing_job_fails_the_run_promptly_with_its_slurm_log(local_slurm: None, tmp_path: Path) -> None:
    source = tmp_path / "datasets"
    (source / "coco_mini").mkdir(parents=True)  # present but empty: the prepare stage must refuse it
    config = write_yaml(tmp_path / "broken.yaml", {"datasets": {"source_root": str(source)}})
    start = time.monotonic()
    result = snakemake(tmp_path / "work", "--profile", "slurm", "--configfile", config, *FAST_STATUS, "--",
                       "results/prepare/coco/manifest.json", timeout=300)
    elapsed = time.monotonic() - start
    out = result.stdout + result.stderr
    assert result.returncode != 0
    # The profile retries once (a preempted job resumes); both attempts fail and are reported.
    assert len(slurm_job_ids(out)) == 2 and elapsed < 150, (elapsed, out)
    logs = re.findall(r"log: results/logs/prepare_coco\.log, (\S+/slurm_logs/rule_prepare_coco/\d+\.log)", out)
    assert logs and all(Path(log).is_file() for log in logs), out
    assert "COCO-mini source" in (tmp_path / "work" / "results" / "logs" / "prepare_coco.log").read_text()


def test_slurm_tests_run_last(request: pytest.FixtureRequest) -> None:
    """The cluster tests are ordered last (conftest): once SLURM's client tools are installed, every Snakemake
    call waits ~10 s on a controller that is not running, so the other tests run before the install."""
    names = [item.name for item in request.session.items]
    marked = [i for i, item in enumerate(request.session.items) if item.get_closest_marker("slurm")]
    assert not marked or marked == list(range(len(names) - len(marked), len(names)))


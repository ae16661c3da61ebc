"""The command that starts a (possibly distributed) PyTorch training job, in place of `python`.

`python -m pretrain train` finds its rank in the environment torchrun sets, so a rule only swaps
its interpreter for `torch_launch_prefix(...)`.
"""

from __future__ import annotations

from core.errors import UserError

# torchrun forwards only SIGTERM, SIGINT, SIGHUP and SIGQUIT to its workers by default; SIGUSR1
# (`sbatch --signal=USR1@<seconds>`) would kill torchrun itself before the workers could checkpoint.
_SIGNALS = "--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
# The first node of the allocation hosts the rendezvous (SLURM's standard multi-node pattern).
_FIRST_NODE = "$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)"


def torch_launch_prefix(gpus_per_node: int, nodes: int) -> str:
    """`python` for one process; torchrun with one process per GPU on one node; on M > 1 nodes one
    torchrun per node (srun), meeting at the first node's port 29500."""
    if gpus_per_node < 0 or nodes < 1:
        raise UserError(f"cannot launch on {nodes} node(s) x {gpus_per_node} GPU(s): set nodes >= 1 and "
                        "gpus per node >= 0 in the resources config.")
    if nodes == 1 and gpus_per_node <= 1:
        return "python"
    if nodes == 1:
        return f"torchrun --standalone --nproc-per-node {gpus_per_node} {_SIGNALS}"
    if gpus_per_node == 0:
        raise UserError(f"{nodes} nodes without GPUs: multi-node training runs one process per GPU; "
                        "set gpus per node >= 1 or nodes to 1.")
    return (f"srun --nodes {nodes} --ntasks-per-node 1 torchrun --nnodes {nodes} --nproc-per-node {gpus_per_node} "
            f"--rdzv-id $SLURM_JOB_ID --rdzv-backend c10d --rdzv-endpoint {_FIRST_NODE}:29500 {_SIGNALS}")

"""What model_type llm adds to the model server container: vLLM's arguments, shared memory for
its worker processes, and a start-up budget that fits loading large weights."""

from __future__ import annotations

from typing import Any

from mlmodel_operator import api

SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"
# Per GPU (and for a CPU-only server): PyTorch's and NCCL's shared-memory buffers between the
# tensor-parallel workers, and vLLM's message queues between its API server and engine.
SHM_PER_GPU = 2 * 2**30


def llm_settings(spec: api.MLModelDeploymentSpec) -> api.LLMSettings:
    return spec.llm or api.LLMSettings()  # type: ignore[call-arg]


def vllm_args(name: str, spec: api.MLModelDeploymentSpec, port: int) -> list[str]:
    """vLLM's arguments beyond --model: the name clients ask for, the port, one tensor-parallel
    rank per GPU, and the spec's settings, then extra_args as given (later flags win in vLLM's
    argument parser, but extra_args cannot repeat the ones set here: see LLM_RESERVED_FLAGS)."""
    llm = llm_settings(spec)
    args = [f"--served-model-name={name}", f"--port={port}"]
    gpus = spec.computational_resources.gpu_allocation
    if gpus:
        args.append(f"--tensor-parallel-size={gpus}")
    if llm.max_model_len is not None:
        args.append(f"--max-model-len={llm.max_model_len}")
    if llm.dtype is not None:
        args.append(f"--dtype={llm.dtype}")
    if llm.gpu_memory_utilization is not None:
        args.append(f"--gpu-memory-utilization={llm.gpu_memory_utilization:g}")
    return [*args, *llm.extra_args]


def shm_size(spec: api.MLModelDeploymentSpec) -> int:
    """SHM_PER_GPU per GPU (one share without GPUs), at most half the replica's memory: what is
    written to a memory-backed volume counts against the container's memory limit."""
    resources = spec.computational_resources
    wanted = SHM_PER_GPU * max(1, resources.gpu_allocation)
    return min(wanted, resources.memory_bytes // 2)


def shm_volume(spec: api.MLModelDeploymentSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The memory-backed /dev/shm (a container's own is 64 MiB), and its mount."""
    size = api.format_memory(shm_size(spec))
    volume = {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}}
    return volume, {"name": SHM_VOLUME, "mountPath": SHM_PATH}


def startup_budget_seconds(spec: api.MLModelDeploymentSpec) -> int:
    return llm_settings(spec).startup_timeout_seconds

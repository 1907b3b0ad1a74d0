"""The vLLM container the operator builds, checked by vLLM itself: its own argument parser and
validation take the arguments of a 4-GPU model (which cannot run here), and the module the
container runs exists. vLLM's CPU build has the same server code as the GPU image."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from llm_helpers import vllm_python
from mlmodel_operator import api
from mlmodel_operator.builders import BuildSettings, Owner, build_children
from mlmodel_operator.runtimes import DEFAULT_RUNTIMES

PARSE = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser
args = make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:])
validate_parsed_serve_args(args)
plain = (str, int, float, bool, list, type(None))
print(json.dumps({k: v for k, v in vars(args).items() if isinstance(v, plain)}))
"""


def founding_llm_container() -> dict[str, Any]:
    """The founding manifest's shape (4 GPUs, 64 GB) as an LLM."""
    spec = api.MLModelDeploymentSpec.model_validate(
        {
            "model_type": "llm",
            "model_uri": "hf://meta-llama/Llama-3.1-70B-Instruct",
            "computational_resources": {"gpu_allocation": 4, "memory_requirements": "64GB"},
            "llm": {
                "max_model_len": 8192,
                "dtype": "bfloat16",
                "gpu_memory_utilization": 0.9,
                "extra_args": ["--enable-prefix-caching", "--max-num-seqs=128"],
            },
        }
    )
    settings = BuildSettings(runtimes=dict(DEFAULT_RUNTIMES), monitor_image="monitor:1")
    owner = Owner(name="assistant", namespace="ml", uid="u")
    (deployment,) = [
        o for o in build_children(owner, spec, settings).apply if o["kind"] == "Deployment"
    ]
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_vllm_parses_and_validates_the_four_gpu_arguments() -> None:
    container = founding_llm_container()
    python = str(vllm_python())
    done = subprocess.run(
        [python, "-c", PARSE, *container["args"]], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed["model"] == "/mnt/models"
    assert parsed["served_model_name"] == ["assistant"]
    assert parsed["port"] == 8000
    assert parsed["tensor_parallel_size"] == 4
    assert (parsed["max_model_len"], parsed["dtype"]) == (8192, "bfloat16")
    assert parsed["gpu_memory_utilization"] == 0.9
    assert parsed["enable_prefix_caching"] is True and parsed["max_num_seqs"] == 128


def test_vllm_refuses_what_the_operator_would_never_send() -> None:
    python = str(vllm_python())
    done = subprocess.run(
        [python, "-c", PARSE, "--model=/mnt/models", "--dtype=int3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0 and "int3" in done.stderr


def test_the_container_runs_a_module_vllm_has() -> None:
    container = founding_llm_container()
    assert container["command"][:2] == ["python3", "-m"]
    module = container["command"][2]
    check = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    assert subprocess.run([str(vllm_python()), "-c", check], timeout=120).returncode == 0

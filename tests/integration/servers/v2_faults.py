"""A small Open Inference Protocol (V2) model server with faults on demand, to stand for a bad
new model version: it answers a share of its inferences 500 and can take its time. It echoes
each input tensor as an output of the same name, type and shape. aiohttp and the standard
library only, so it starts in a moment.

    python v2_faults.py PORT [--model NAME] [--error-ratio R] [--delay SECONDS]

Errors are spread evenly, not drawn at random: of the first n inferences, exactly
floor(n * R) are answered 500.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from typing import Any

from aiohttp import web


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--model", default="iris")
    parser.add_argument("--error-ratio", type=float, default=0.0, help="share answered 500")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    return parser.parse_args()


def app(model: str, error_ratio: float, delay: float) -> web.Application:
    served = 0

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def model_ready(request: web.Request) -> web.Response:
        if request.match_info["model"] != model:
            return web.json_response(
                {"error": f"model {request.match_info['model']} not found"}, status=404
            )
        return web.json_response({"name": model, "ready": True})

    async def infer(request: web.Request) -> web.Response:
        nonlocal served
        if request.match_info["model"] != model:
            return web.json_response({"error": "model not found"}, status=404)
        try:
            body: dict[str, Any] = json.loads(await request.read())
            inputs = body["inputs"]
            outputs = [
                {k: tensor[k] for k in ("name", "shape", "datatype", "data")} for tensor in inputs
            ]
        except (ValueError, KeyError, TypeError) as err:
            return web.json_response({"error": f"bad request: {err!r}"}, status=400)
        if delay:
            await asyncio.sleep(delay)
        served += 1
        if math.floor(served * error_ratio) > math.floor((served - 1) * error_ratio):
            return web.json_response({"error": "injected fault"}, status=500)
        answer = {"model_name": model, "outputs": outputs}
        if "id" in body:
            answer["id"] = body["id"]
        return web.json_response(answer)

    application = web.Application()
    application.router.add_get("/v2/health/live", ready)
    application.router.add_get("/v2/health/ready", ready)
    application.router.add_get("/v2/models/{model}/ready", model_ready)
    application.router.add_post("/v2/models/{model}/infer", infer)
    return application


def main() -> None:
    args = parse_args()
    web.run_app(
        app(args.model, args.error_ratio, args.delay),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()

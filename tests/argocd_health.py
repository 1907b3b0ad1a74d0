"""Run the Argo CD health check (gitops/argocd/health.lua) the way Argo CD does: the live object
as the global `obj`, the script's returned table read back as status and message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Argo CD runs health checks in gopher-lua, a Lua 5.1; lupa ships that language version too.
from lupa.lua51 import LuaRuntime

REPO = Path(__file__).resolve().parent.parent
HEALTH_LUA = REPO / "gitops" / "argocd" / "health.lua"
# Argo CD opens only the safe standard libraries for these scripts.
UNAVAILABLE = ("os", "io", "require", "dofile", "loadfile", "package", "debug")


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])  # indexed from 1, as in Argo CD
    return value


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    lua = LuaRuntime(register_eval=False, register_builtins=False)
    env = lua.globals()
    for name in UNAVAILABLE:
        env[name] = None
    env.obj = _to_lua(lua, obj)
    result = lua.execute(HEALTH_LUA.read_text())
    return {"status": result["status"], "message": result["message"]}

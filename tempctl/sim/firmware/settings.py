"""PATCH /api/system on the device: validate (``patch``), then store what was accepted.

A mixin of ``Firmware`` (axeos-api.md §5, §14). Settings that info reads back from NVS
(§4.1 "cfg": pools, stratum, display ...) are written into the device's info template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tempctl.sim.firmware import patch as patching
from tempctl.sim.firmware.cjson import dumps
from tempctl.sim.firmware.states import RESET_PANIC

__all__ = ["SettingsMixin"]

if TYPE_CHECKING:
    from tempctl.sim.firmware.device import Firmware

    _Base = Firmware
else:
    _Base = object


class SettingsMixin(_Base):
    # -- PATCH /api/system (§5, §14) -----------------------------------------------------------

    def patch(self, body: bytes) -> tuple[int, str, bytes]:
        """Apply a settings PATCH; (status, content type, body). Status 0 = connection dropped."""
        self.patches += 1
        if len(body) >= patching.PATCH_MAX_BYTES:
            return 500, "text/html", b"content too long"
        try:
            data = patching.parse_json(body) if body else None
            parsed = body != b""
        except (ValueError, UnicodeDecodeError):
            data, parsed = None, False
        if not parsed:
            if self.v >= (2, 4, 0):
                return 400, "text/html", b"Invalid JSON"
            return 200, "text/html", b""  # §5.2: before v2.4.0 bad JSON is a silent 200
        if not isinstance(data, dict):
            return 200, "text/html", b""  # §5.2: a non-object is a 200 no-op
        if self.v < (2, 0, 4) and any(k not in data for k in patching.V200_REQUIRED):
            self.crash(RESET_PANIC)  # §5.2: a partial body crashes v2.0.0-v2.0.3
            return 0, "", b""
        if self.v < (2, 11, 0):
            self._store(patching.legacy_settings(self.v, data))
            return 200, "text/html", b""
        try:
            clean = patching.validated_settings(self.v, data)
        except patching.WrongInput:
            return 400, "text/html", b"Wrong API input"
        old_host = self.hostname
        self._store(clean)
        if self.v >= (2, 15, 0) and "hostname" in clean and clean["hostname"] != old_host:
            # §3 / §14: JSON reply with the redirect (http_server.c ~l.1104)
            reply = {
                "status": "success",
                "redirect": {
                    "url": f"http://{self.hostname}.local",
                    "delay": 2000,
                    "message": "Hostname updated. Redirecting to new address...",
                },
            }
            return 200, "application/json", dumps(reply, pretty=False).encode()
        return 200, "text/html", b""

    def _store(self, clean: dict[str, object]) -> None:
        freq_or_mv = False
        for key, value in clean.items():
            if key == "frequency":
                self.nvs_mhz = float(value) if self.v >= (2, 10, 0) else float(int(value))
                freq_or_mv = True
            elif key == "coreVoltage":
                self.nvs_mv = int(value)
                freq_or_mv = True
            elif key == "autofanspeed":
                self.autofan = bool(value)
            elif key in ("manualFanSpeed", "fanspeed"):
                self.manual_fan = float(value)
            elif key == "minFanSpeed":
                self.min_fan = float(value)
            elif key == "temptarget":
                self.temptarget = float(value)
            elif key == "overheat_mode":
                self.overheat_mode = 0
            elif key == "statsFrequency":
                self.stats_frequency = int(value)
                self.stats.next_at = None
            elif key == "hostname":
                self.hostname = str(value)
            elif key == "pools":
                self._store_pools(value)  # type: ignore[arg-type]
            else:
                self.extra_settings[key] = value
                self._show_setting(key, value)
        if "primaryPoolIndex" in clean or "secondaryPoolIndex" in clean:
            self._mirror_pools()
        if freq_or_mv:
            self._schedule_pickup()

    def _show_setting(self, key: str, value: object) -> None:
        """Settings are read back from NVS by info (§4.1 "cfg"); passwords are never shown."""
        if key not in self.template or "Password" in key or key == "wifiPass":
            return
        if isinstance(self.template[key], bool):
            value = bool(value)  # v2.15 shows the boolean-ish stratum keys as bools (§4.1)
        self.template[key] = value

    def _store_pools(self, pools: list[dict[str, object]]) -> None:
        """v2.15 pool slots: merge each entry into its slot (a new list: info shares it)."""
        slots = {p["id"]: dict(p) for p in self.template.get("pools", [])}
        for entry in pools:
            slot = slots.setdefault(entry["id"], _empty_pool(int(entry["id"])))  # type: ignore[arg-type]
            for key, value in entry.items():
                if key == "stratumPassword":
                    value = "*****"  # §4.1: the password is shown as "*****"
                elif isinstance(slot.get(key), bool):
                    value = bool(value)
                slot[key] = value
        self.template["pools"] = [slots[k] for k in sorted(slots)]
        self._mirror_pools()

    def _mirror_pools(self) -> None:
        """§4.1: stratum* / fallbackStratum* mirror the primary / secondary slot."""
        body = self.template
        for index_key in ("primaryPoolIndex", "secondaryPoolIndex"):
            if index_key in self.extra_settings and index_key in body:
                body[index_key] = self.extra_settings[index_key]
        slots = {p["id"]: p for p in body.get("pools", [])}
        for index_key, prefix in (("primaryPoolIndex", ""), ("secondaryPoolIndex", "fallback")):
            pool = slots.get(body.get(index_key))
            if pool is None:
                continue
            for key, value in pool.items():
                if key in ("id", "stratumPassword"):
                    continue
                name = prefix + key[0].upper() + key[1:] if prefix else key
                if name in body:
                    body[name] = value


def _empty_pool(slot: int) -> dict[str, object]:
    # v2.15 slot defaults, as the example body's slots (esp-miner-openapi.master.yaml "Pool")
    return {
        "id": slot,
        "stratumProtocol": "SV1",
        "stratumURL": "",
        "stratumPort": 3333,
        "stratumUser": "",
        "stratumPassword": "*****",
        "stratumSuggestedDifficulty": 1000,
        "stratumExtranonceSubscribe": False,
        "stratumTLS": 0,
        "stratumCert": "",
        "stratumDecodeCoinbase": True,
        "stratumV2ChannelType": "extended",
        "stratumV2AuthorityPubkey": "",
        "stratumV2RequireAuth": False,
    }

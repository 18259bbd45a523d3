"""What the thermal model learns and starts from: its parameters, their priors per ASIC
family and the fan's effect (moved out of model.py, which learns them). Pure."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from tempctl.core.estimator import NOISE_PRIOR_C

__all__ = ["PRIORS", "ModelParams", "fan_scale", "prior_for"]

FAN_REF, FAN_STILL, FAN_EXP = 100.0, 10.0, 0.55  # plant.FanEffect (mtab3000 traces)


def fan_scale(duty: float | None) -> float:
    d = 100.0 if duty is None else min(max(duty, 0.0), 100.0)
    return ((FAN_REF + FAN_STILL) / (d + FAN_STILL)) ** FAN_EXP


@dataclass(frozen=True, slots=True)
class ModelParams:
    r: float  # °C/W at 100 % fan
    k: float  # W per MHz·V² (0 = not known yet: estimated from the first reading)
    leak: float = 0.0093  # per °C (jojo4751 Gammas, plant.py)
    share: float = 0.50  # fast share of a step (pmcochrane 1 Hz trace, data/README §4)
    tau_s: float = 48.0  # slow time constant (data/README §4)
    steps: int = 0  # frequency steps learned from
    noise_c: float = NOISE_PRIOR_C  # sd of one temperature reading (learned, estimator.py)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None, fallback: ModelParams) -> ModelParams:
        try:
            data = json.loads(text or "")
            out = replace(
                fallback, **{k: float(data[k]) for k in ("r", "k", "leak", "share", "tau_s")}
            )
            out = replace(out, steps=int(data.get("steps", 0)))
            out = replace(out, noise_c=float(data.get("noise_c", fallback.noise_c)))
        except (ValueError, TypeError, KeyError):
            return fallback
        # τ down to 0.05 s: at short settle times (tests, the demo) the model learns 0.75-30 s
        # (issue 23.5); ThermalModel clamps it to its own time scale anyway
        ok = (
            0.05 <= out.r <= 10
            and 0 <= out.k <= 1
            and 0.05 <= out.tau_s <= 600
            and 0.01 <= out.noise_c <= 10
        )
        return out if ok else fallback


# °C/W at full fan per ASIC family: BM1370 (Gamma) is measured (data/README §4: 1.14 and 1.05,
# plant.py 1.10); BM1368 from the adammwest Supra fit (1.84, data/README §4); the rest are
# taken as the Supra's (no data). Multi-chip boards start from these too and learn their own.
PRIORS = {"BM1370": 1.10, "BM1368": 1.84, "BM1366": 1.84, "BM1397": 1.84}


def prior_for(asic: str | None) -> ModelParams:
    return ModelParams(r=PRIORS.get((asic or "").upper(), 1.10), k=0.0)

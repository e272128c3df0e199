"""Hypothesis profiles and the rig for the hostile-input suite.

``HYPOTHESIS_PROFILE`` picks the volume: ``default`` (or unset) for the
normal suite, ``fuzz`` for ``make fuzz``, at least 10,000 hostile callbacks
in all. Each property asks for its share of the profile's examples with
:func:`examples`, so the whole folder scales together.

The profiles apply to this folder only: the properties here take them
explicitly, and loading one globally would change every other suite's
Hypothesis settings in a full run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings

from tally import record

from .rig import Rig, Seen, running_rig

__all__ = ["Counts", "examples", "profile_name"]

PROFILE_VARIABLE = "HYPOTHESIS_PROFILE"

# Examples per unit of share: the normal suite's folder runs in well under a
# minute on two cores; the fuzz profile makes over 10,000 hostile callbacks,
# genuine saves left out.
PROFILES = {"default": 50, "fuzz": 1600}

# "fuzz" is registered under its own name, so ``--hypothesis-profile=fuzz``
# works too; "default" cannot be: re-registering Hypothesis's own default
# would change it for every suite.
REGISTERED = {"default": "fuzz-default", "fuzz": "fuzz"}

for _name, _examples in PROFILES.items():
    settings.register_profile(
        REGISTERED[_name],
        max_examples=_examples,
        # No timing: the machine is shared, and speed is for benchmarks.
        deadline=None,
        # The examples share one service whose state moves on (keys rotate,
        # versions pile up), so a stored failing example may not replay.
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
        print_blob=True,
    )


def profile_name() -> str:
    name = os.environ.get(PROFILE_VARIABLE) or settings.get_current_profile_name()
    return name if name in PROFILES else "default"


def examples(share: float) -> settings:
    """This profile's settings for a property with ``share`` units of examples."""
    profile = settings.get_profile(REGISTERED[profile_name()])
    return settings(profile, max_examples=max(1, round(profile.max_examples * share)))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One service per test module, its state judged example by example."""
    with running_rig(tmp_path_factory.mktemp("fuzz") / "data") as running:
        yield running
        assert running.trap.connections == 0, "something connected to the trap"


@dataclass
class Counts:
    """What one property tried and what held, for the reliability report.

    Hostile examples and genuine ones (mixed in to prove that the checks
    can fail) are counted apart: ``tried`` and ``held`` are the hostile
    ones; ``genuine`` were tried and ``genuine_seen`` were seen to act. The
    genuine ones go to the tally under a unit of their own, so that no
    target counts them as hostile.
    """

    check: str
    unit: str
    genuine_label: str = "genuine saves mixed in are seen as writes"
    genuine_unit: str = "genuine save"
    tried: int = 0
    held: int = 0
    writes: int = 0
    off_origin: int = 0
    genuine: int = 0
    genuine_seen: int = 0
    # Examples whose valid signed status 1 or 4 recorded its editors.
    editors_recorded: int = 0

    def observe(
        self, seen: Seen, *, genuine: bool = False, wrote: bool | None = None
    ) -> None:
        """Count one example as tried; the caller calls ``hold`` if all held.

        ``wrote`` says whether a hostile example wrote what it must not,
        where some write is its due (a signed status 1 records its editors,
        whatever the body beside the token says); by default, any write.
        """
        self.off_origin += seen.fetched_off_origin
        if genuine:
            self.genuine += 1
            self.genuine_seen += seen.wrote
        else:
            self.tried += 1
            self.writes += seen.wrote if wrote is None else wrote

    def hold(self, *, genuine: bool = False) -> None:
        if not genuine:
            self.held += 1

    def record(self, extra: str = "") -> None:
        """Write the counts to the tally; call once, when the property ends."""
        detail = (
            f"profile={profile_name()} writes={self.writes} "
            f"off-origin fetches={self.off_origin}{extra}"
        )
        record(
            "fuzz",
            self.check,
            tried=self.tried,
            held=self.held,
            unit=self.unit,
            detail=detail,
        )
        if self.genuine:
            record(
                "fuzz",
                f"{self.check}: {self.genuine_label}",
                tried=self.genuine,
                held=self.genuine_seen,
                unit=self.genuine_unit,
                detail="proves the check can fail",
            )

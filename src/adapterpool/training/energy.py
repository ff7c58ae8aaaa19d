"""Wall time, CPU time and energy/CO2 of a block of work, energy through codecarbon in offline
mode.

CPU time is the process's (``time.process_time``: every thread of it, user and system). For
single-threaded work it equals wall time on an idle core, and unlike wall time it does not grow
when other work shares the machine (measured on the 2-core development machine: a fixed
single-threaded workload took 4.0-4.3 CPU seconds at 1.5 and at 2.5 runnable processes per core,
while its wall time went from 4.3 to 6.8 s). That makes it the cost to compare where a
benchmark's units run side by side (``BenchConfig.time_measure``).

codecarbon measures with RAPL/NVML where it can and otherwise estimates from CPU load and a TDP
table; the report carries its method so that an estimate is never passed off as a measurement.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field

DEFAULT_COUNTRY = os.environ.get("ADAPTERPOOL_COUNTRY", "USA")


@dataclass
class EnergyReading:
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    kwh: float | None = None
    co2_kg: float | None = None
    tool: str | None = None
    method: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_report(self) -> dict | None:
        if self.kwh is None:
            return None
        return {"kwh": self.kwh, "co2_kg": self.co2_kg, "tool": self.tool, "method": self.method}

    def __add__(self, other: EnergyReading) -> EnergyReading:
        kwhs = [r.kwh for r in (self, other) if r.kwh is not None]
        co2s = [r.co2_kg for r in (self, other) if r.co2_kg is not None]
        return EnergyReading(
            seconds=self.seconds + other.seconds,
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            kwh=sum(kwhs) if kwhs else None,
            co2_kg=sum(co2s) if co2s else None,
            tool=self.tool or other.tool,
            method=self.method or other.method,
            notes=self.notes + other.notes,
        )


class EnergyMeter:
    """Context manager: ``with EnergyMeter() as m: ...; m.reading``.

    ``enabled=False`` (or codecarbon missing/failing) still records wall and CPU time, with kwh
    None.
    """

    def __init__(self, *, country: str = DEFAULT_COUNTRY, enabled: bool = True) -> None:
        self.country = country
        self.enabled = enabled
        self.reading = EnergyReading()
        self._tracker = None
        self._start = 0.0
        self._start_cpu = 0.0

    def __enter__(self) -> EnergyMeter:
        if self.enabled:
            try:
                from codecarbon import OfflineEmissionsTracker

                logging.getLogger("codecarbon").setLevel(logging.ERROR)
                with warnings.catch_warnings():  # codecarbon's own deprecation chatter
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._tracker = OfflineEmissionsTracker(
                        country_iso_code=self.country,
                        save_to_file=False,
                        log_level="error",
                        tracking_mode="process",
                        measure_power_secs=5,
                    )
                self._tracker.start()
            except Exception as exc:  # codecarbon can fail on exotic hardware: keep timing
                self._tracker = None
                self.reading.notes.append(f"energy not measured: {type(exc).__name__}: {exc}")
        self._start = time.perf_counter()
        self._start_cpu = time.process_time()
        return self

    def __exit__(self, *exc_info) -> None:
        self.reading.seconds = time.perf_counter() - self._start
        self.reading.cpu_seconds = time.process_time() - self._start_cpu
        if self._tracker is None:
            return
        try:
            co2 = self._tracker.stop()
            data = self._tracker.final_emissions_data
            hardware = ", ".join(repr(h) for h in getattr(self._tracker, "_hardware", []))
            measured = "RAPL" in hardware or "NVML" in hardware or "GPU" in hardware
            self.reading.kwh = float(data.energy_consumed)
            self.reading.co2_kg = float(co2 or 0.0)
            self.reading.tool = "codecarbon"
            self.reading.method = (
                f"{'measured' if measured else 'estimated'} ({hardware}; country {self.country})"
            )
        except Exception as exc:
            self.reading.notes.append(f"energy not measured: {type(exc).__name__}: {exc}")

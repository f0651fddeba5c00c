"""A faithful Batch API server (Mistral's or OpenAI's Files + Batch API): the demo's, tests'
and benchmarks'.

::

    from orchestrator.emulator import Emulator, EmulatorSettings, FaultSettings

    with Emulator(EmulatorSettings(time_scale=60.0), clock=clock) as emu:
        client = emu.client("my-key")   # httpx.AsyncClient over httpx.ASGITransport

A wire-neutral simulation (jobs, files, clock, faults, state) with one package per wire
(``mistral/``, ``openai/``); see ``docs/emulator.md`` for the layout, the behaviour, the
introspection routes and the fault model.
"""

from __future__ import annotations

from orchestrator.emulator.emulator import Emulator as Emulator
from orchestrator.emulator.settings import EmulatorSettings as EmulatorSettings
from orchestrator.emulator.settings import FaultSettings as FaultSettings

__all__ = ["Emulator", "EmulatorSettings", "FaultSettings"]

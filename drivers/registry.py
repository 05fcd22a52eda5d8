"""Driver names as lab files write them, and the role each fills."""

from __future__ import annotations

from drivers.awg_5014 import TektronixAwg5014
from drivers.base import Driver
from drivers.herald_logic import HeraldLogic as QnodeHeraldLogic
from drivers.laser_cobolt import CoboltLaser
from drivers.microwave_sgs100a import RsSgs100a
from drivers.protocols import (
    HeraldLogic,
    Laser,
    MicrowaveSource,
    PhaseStabiliser,
    RealTimeSequencer,
    TimeTagger,
    WaveformGenerator,
)
from drivers.sequencer_rtseq import RtSequencer
from drivers.stabiliser_mdt import MdtPiezoDriver
from drivers.tagger_idq import TimeController

DRIVERS: dict[str, type[Driver]] = {
    "rs_sgs100a": RsSgs100a,
    "tek_awg5014": TektronixAwg5014,
    "rtseq": RtSequencer,
    "idq_time_controller": TimeController,
    "qnode_herald_logic": QnodeHeraldLogic,
    "cobolt": CoboltLaser,
    "thorlabs_mdt694b": MdtPiezoDriver,
}

ROLES = sorted({cls.ROLE for cls in DRIVERS.values()})

# Each model fits the capability of its role (drivers.protocols.CAPABILITIES): the type
# checker checks these assignments, hil_tests/test_faults.py the instances.
_MICROWAVE_SOURCE: type[MicrowaveSource] = RsSgs100a
_AWG: type[WaveformGenerator] = TektronixAwg5014
_SEQUENCER: type[RealTimeSequencer] = RtSequencer
_TIME_TAGGER: type[TimeTagger] = TimeController
_HERALD_LOGIC: type[HeraldLogic] = QnodeHeraldLogic
_LASER: type[Laser] = CoboltLaser
_PHASE_STABILISER: type[PhaseStabiliser] = MdtPiezoDriver

"""Seeded, labelled Square gift card traffic: ordinary shoppers, fraud patterns and their traps.

>>> from streams.simulation import SimConfig, generate
>>> events = list(generate(SimConfig(cards=300, days=7, seed=1)))
>>> events[0].envelope["type"], events[0].event_id.startswith("square:gcact_")
('gift_card.activity.created', True)
>>> any(e.is_fraud for e in events)
True
"""

from streams.simulation.engine import Simulation, generate
from streams.simulation.model import PATTERNS, TRAPS, SimConfig, SimEvent

__all__ = ["PATTERNS", "TRAPS", "SimConfig", "SimEvent", "Simulation", "generate"]

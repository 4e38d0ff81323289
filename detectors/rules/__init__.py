"""Rules: explicit, configurable checks that analysts can name. One module per rule.

``CARD_RULES`` run on a card's own events (card scope); ``ENTITY_RULES`` run on the windows of a
location, payment instrument or employee (entity scope; ``insider_credit`` has both).
``RULE_PARAMS`` maps each rule name to its parameter dataclass, which a policy file may override.
"""

from __future__ import annotations

from detectors.rules.bulk_purchase import BulkPurchase
from detectors.rules.dormant_drain import DormantDrain
from detectors.rules.impossible_travel import ImpossibleTravel
from detectors.rules.insider_credit import InsiderCredit
from detectors.rules.known_instrument import KnownFraudInstrument
from detectors.rules.rapid_drain import RapidDrain
from detectors.rules.slow_drain import SlowDrain

CARD_RULES = (RapidDrain, ImpossibleTravel, DormantDrain, SlowDrain, InsiderCredit,
              KnownFraudInstrument)
ENTITY_RULES = (BulkPurchase, InsiderCredit)
RULE_PARAMS = {r.name: r.Params for r in (*CARD_RULES, *ENTITY_RULES)}
#: Every rule name in a fixed order: bit ``i`` of a card's alert mask is ``RULE_NAMES[i]``.
RULE_NAMES = tuple(RULE_PARAMS)

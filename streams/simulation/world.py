"""The simulated merchant: its locations, local business hours, and Square-shaped identifiers.

Everything random draws from one ``random.Random`` so a seed reproduces a run byte for byte.
Times are integer milliseconds since the epoch (UTC).

>>> import random
>>> stores = build_locations()
>>> len([s for s in stores if s.online]), len({s.city for s in stores if not s.online}) >= 8
(2, True)
>>> ids = Ids(random.Random(1))
>>> len(ids.gan()), ids.activity_id().startswith("gcact_"), len(ids.event_id())
(16, True, 36)
"""

from __future__ import annotations

import math
import random
from base64 import b64encode
from bisect import bisect
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from itertools import accumulate
from zoneinfo import ZoneInfo

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

#: (city, lat, lon, IANA zone, number of stores, neighbourhoods)
CITIES: tuple[tuple[str, float, float, str, int, tuple[str, ...]], ...] = (
    ("New York", 40.7128, -74.0060, "America/New_York", 5,
     ("SoHo", "Midtown", "Upper West Side", "Williamsburg", "Astoria")),
    ("Boston", 42.3601, -71.0589, "America/New_York", 2, ("Back Bay", "Cambridge")),
    ("Miami", 25.7617, -80.1918, "America/New_York", 2, ("Brickell", "Wynwood")),
    ("Chicago", 41.8781, -87.6298, "America/Chicago", 4,
     ("Loop", "Wicker Park", "Lincoln Park", "Evanston")),
    ("Austin", 30.2672, -97.7431, "America/Chicago", 2, ("South Congress", "Domain")),
    ("Denver", 39.7392, -104.9903, "America/Denver", 2, ("LoDo", "Cherry Creek")),
    ("Phoenix", 33.4484, -112.0740, "America/Phoenix", 2, ("Downtown", "Scottsdale")),
    ("Los Angeles", 34.0522, -118.2437, "America/Los_Angeles", 4,
     ("Silver Lake", "Santa Monica", "Pasadena", "Downtown LA")),
    ("San Francisco", 37.7749, -122.4194, "America/Los_Angeles", 3,
     ("Mission", "Hayes Valley", "Oakland")),
    ("Seattle", 47.6062, -122.3321, "America/Los_Angeles", 2, ("Capitol Hill", "Ballard")),
)
MERCHANT_NAME = "Northwind Books & Cafe"
HQ = (40.7128, -74.0060, "America/New_York")

# Relative sales per local hour. Stores open 08:00-21:00; online sells around the clock.
_STORE_HOURS = tuple(range(8, 21))
_STORE_WEIGHTS = (3, 5, 6, 7, 9, 8, 6, 6, 7, 8, 7, 5, 3)
_ONLINE_HOURS = tuple(range(24))
_ONLINE_WEIGHTS = (2, 1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 9, 9, 8, 6, 4)
_NIGHT_HOURS = (0, 1, 2, 3, 4)
_NIGHT_WEIGHTS = (3, 4, 4, 3, 2)


class Location:
    """One store or web shop of the merchant."""

    __slots__ = ("location_id", "name", "lat", "lon", "timezone", "online", "city", "weight",
                 "hours", "cum_weights")

    def __init__(self, location_id: str, name: str, lat: float, lon: float, timezone: str,
                 online: bool, city: str, weight: float) -> None:
        self.location_id = location_id
        self.name = name
        self.lat = lat
        self.lon = lon
        self.timezone = timezone
        self.online = online
        self.city = city
        self.weight = weight
        self.hours = _ONLINE_HOURS if online else _STORE_HOURS
        self.cum_weights = tuple(accumulate(_ONLINE_WEIGHTS if online else _STORE_WEIGHTS))

    def to_json(self) -> dict[str, object]:
        """The entry of ``locations.json`` (PRODUCT.md's locations file)."""
        out: dict[str, object] = {"location_id": self.location_id, "name": self.name,
                                  "lat": self.lat, "lon": self.lon, "timezone": self.timezone}
        if self.online:
            out["channel"] = "online"
        return out

    def __repr__(self) -> str:
        return f"Location({self.location_id!r}, {self.name!r})"


def _square_id(rng: random.Random, prefix: str, length: int) -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return prefix + "".join(rng.choice(alphabet) for _ in range(length))


def build_locations(layout_seed: int = 20251201) -> list[Location]:
    """The merchant's stores (a few per city, jittered around the centre) and two web shops.

    The layout has its own seed so every run shares one locations file.
    """
    rng = random.Random(layout_seed)
    out = []
    for city, lat, lon, tz, n, hoods in CITIES:
        for hood in hoods[:n]:
            out.append(Location(_square_id(rng, "L", 12), f"{MERCHANT_NAME} - {hood}, {city}",
                                round(lat + rng.uniform(-0.06, 0.06), 5),
                                round(lon + rng.uniform(-0.06, 0.06), 5), tz, False, city,
                                round(rng.uniform(0.5, 1.6), 2)))
    for name, weight in (("Online store", 4.0), ("Mobile app", 2.0)):
        out.append(Location(_square_id(rng, "L", 12), f"{MERCHANT_NAME} - {name}",
                            HQ[0], HQ[1], HQ[2], True, "online", weight))
    return out


def distance_km(a: Location, b: Location) -> float:
    """Great-circle distance between two locations (web shops sit at the head office)."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


_GAN_STEP = 61_803_398_877  # coprime with 10**11: a full-period walk
_B64_CLEAN = bytes.maketrans(b"+/", b"xQ")
_UUID_MASK = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID_V4 = (0x4 << 76) | (0x2 << 62)


class Ids:
    """Square-looking identifiers drawn from the run's random generator."""

    __slots__ = ("_bits", "_gans", "_step")

    def __init__(self, rng: random.Random, lane: int = 0, lanes: int = 1,
                 gan_seed: int = 0) -> None:
        self._bits = rng.getrandbits
        # GANs walk one full-period sequence; each of ``lanes`` generators takes every
        # ``lanes``-th step from its own offset, so GANs stay unique across shards.
        self._step = _GAN_STEP * lanes % 10**11
        self._gans = (gan_seed + _GAN_STEP * lane) % 10**11

    def hex32(self) -> str:
        return f"{self._bits(128):032x}"

    def card_id(self) -> str:
        return f"gftc:{self._bits(128):032x}"

    def activity_id(self) -> str:
        return f"gcact_{self._bits(128):032x}"

    def gan(self) -> str:
        """A 16-digit GAN, unique within a run (a full-period walk over 11 digits)."""
        gan = self._gans
        self._gans = (gan + self._step) % 10**11
        return f"77833{gan:011d}"

    def event_id(self) -> str:
        """A random (version 4) UUID, as Square's webhook ``event_id``."""
        x = (self._bits(128) & _UUID_MASK) | _UUID_V4
        h = f"{x:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def token(self, length: int) -> str:
        """A base-62-looking token such as Square's payment and order ids (``length`` <= 40)."""
        raw = b64encode(self._bits(240).to_bytes(30, "little")).translate(_B64_CLEAN)
        return raw[:length].decode()

    def payment_id(self) -> str:
        return self.token(29)

    def order_id(self) -> str:
        return self.token(29)

    def instrument_id(self) -> str:
        return "ccof:" + self.token(16)


class Clock:
    """Local calendar days and business hours of locations, relative to the run's first day."""

    __slots__ = ("start_ms", "_start", "_mid", "_rng")

    #: Local midnights are precomputed for days ``-FIRST_DAY`` .. ``days + SPARE_DAYS``.
    FIRST_DAY = 400
    SPARE_DAYS = 400

    def __init__(self, start: date, rng: random.Random, days: int = 0) -> None:
        self._start = start
        self.start_ms = int(datetime(start.year, start.month, start.day,
                                     tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
        self._rng = rng
        self._mid = _midnights(start, self.FIRST_DAY, self.FIRST_DAY + days + self.SPARE_DAYS)

    def midnight(self, tz: str, day: int) -> int:
        """UTC milliseconds of local midnight on day ``day`` (0 = the start date) in ``tz``."""
        try:
            return self._mid[tz][day + self.FIRST_DAY]
        except (KeyError, IndexError):
            d = self._start + timedelta(days=day)
            return int(datetime.combine(d, time(), ZoneInfo(tz)).timestamp() * 1000)

    def day_of(self, loc: Location, ms: int) -> int:
        """The local day index of ``ms`` at ``loc``."""
        day = (ms - self.start_ms) // DAY_MS
        mids = self._mid[loc.timezone]
        i = day + self.FIRST_DAY
        if 0 < i < len(mids) - 2:
            while ms < mids[i]:
                i -= 1
            while ms >= mids[i + 1]:
                i += 1
            return i - self.FIRST_DAY
        midnight, tz = self.midnight, loc.timezone
        while ms < midnight(tz, day):
            day -= 1
        while ms >= midnight(tz, day + 1):
            day += 1
        return day

    def local_hour(self, loc: Location, ms: int) -> float:
        """Hours since local midnight at ``loc``."""
        return (ms - self.midnight(loc.timezone, self.day_of(loc, ms))) / HOUR_MS

    def busy_time(self, loc: Location, day: int) -> int:
        """A random moment of local day ``day`` weighted by the location's trading hours."""
        rnd = self._rng.random
        cum = loc.cum_weights
        i = bisect(cum, rnd() * cum[-1])
        return self.midnight(loc.timezone, day) + int((loc.hours[i] + rnd()) * HOUR_MS)

    def night_time(self, loc: Location, day: int) -> int:
        """A random moment between midnight and 05:00 local time on day ``day``."""
        rnd = self._rng.random
        i = bisect(_NIGHT_CUM, rnd() * _NIGHT_CUM[-1])
        return self.midnight(loc.timezone, day) + int((_NIGHT_HOURS[i] + rnd()) * HOUR_MS)

    def busy_after(self, loc: Location, after_ms: int) -> int:
        """A moment in trading hours at ``loc``, strictly after ``after_ms``."""
        day = self.day_of(loc, after_ms)
        for _ in range(3):
            ms = self.busy_time(loc, day)
            if ms > after_ms:
                return ms
            day += 1
        return after_ms + self._rng.randint(MINUTE_MS, HOUR_MS)


@lru_cache(maxsize=8)
def _midnights(start: date, before: int, count: int) -> dict[str, tuple[int, ...]]:
    """UTC milliseconds of local midnight per zone, for ``count`` days from ``start - before``."""
    first = start - timedelta(days=before)
    out = {}
    for tz in sorted({city[3] for city in CITIES} | {HQ[2]}):
        zone = ZoneInfo(tz)
        out[tz] = tuple(
            int(datetime.combine(first + timedelta(days=i), time(), zone).timestamp() * 1000)
            for i in range(count))
    return out


_NIGHT_CUM = tuple(accumulate(_NIGHT_WEIGHTS))

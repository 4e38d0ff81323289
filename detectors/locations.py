"""Static facts about locations: where a store is, its time zone, and whether it sells online.

The locations file is a JSON list of ``{"location_id", "name", "lat", "lon", "timezone"}`` with an
optional ``"channel": "online"``. Card state stores a location as a 32-bit hash
(:func:`loc_hash`); :meth:`Locations.by_hash` turns it back into a :class:`Location`.

>>> locs = Locations([Location("L1", "Seattle", 47.61, -122.33, "America/Los_Angeles"),
...                   Location("L2", "Miami", 25.76, -80.19, "America/New_York"),
...                   Location("WEB", "Web shop", 0.0, 0.0, "UTC", channel="online")])
>>> round(locs.distance_km("L1", "L2"))
4396
>>> locs.distance_km("L1", "nowhere") is None, locs.is_online("WEB"), locs.is_online("L1")
(True, True, False)
>>> locs.by_hash(loc_hash("L2")).name
'Miami'
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

EARTH_RADIUS_KM = 6371.0088


def loc_hash(location_id: str) -> int:
    """A stable 32-bit hash of a location id (CRC-32), as card state stores locations."""
    return zlib.crc32(location_id.encode())


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres.

    >>> round(haversine_km(0, 0, 0, 1), 1)
    111.2
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True, slots=True)
class Location:
    """One store (or web shop). ``channel`` is ``"online"`` for a web shop, else ``None``."""

    location_id: str
    name: str
    lat: float
    lon: float
    timezone: str = "UTC"
    channel: str | None = None

    @property
    def online(self) -> bool:
        return self.channel == "online"


class InvalidLocations(ValueError):
    """The locations file is not a JSON list of locations; the message says which entry."""


class Locations:
    """A lookup of :class:`Location` by id and by :func:`loc_hash`. Empty when no file is given."""

    def __init__(self, locations: list[Location] | tuple[Location, ...] = ()) -> None:
        self.locations = tuple(locations)
        self._by_id = {loc.location_id: loc for loc in self.locations}
        self._by_hash = {loc_hash(loc.location_id): loc for loc in self.locations}
        self._zones: dict[str, ZoneInfo | None] = {}
        self._dist: dict[tuple[int, int], float | None] = {}

    def __len__(self) -> int:
        return len(self.locations)

    @classmethod
    def load(cls, path: str | Path | None) -> Locations:
        """Read a locations file; ``None`` gives an empty lookup (distances unknown)."""
        if path is None:
            return cls()
        try:
            data = orjson.loads(Path(path).read_bytes())
        except orjson.JSONDecodeError as exc:
            raise InvalidLocations(f"{path}: not JSON: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("locations"), list):
            data = data["locations"]
        if not isinstance(data, list):
            raise InvalidLocations(f"{path}: expected a JSON list of locations")
        out = []
        for i, item in enumerate(data):
            try:
                out.append(Location(
                    location_id=str(item["location_id"]),
                    name=str(item.get("name") or item["location_id"]),
                    lat=float(item["lat"]), lon=float(item["lon"]),
                    timezone=str(item.get("timezone") or "UTC"),
                    channel=item.get("channel")))
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidLocations(f"{path}: entry {i}: {exc!r}") from None
        return cls(out)

    def get(self, location_id: str) -> Location | None:
        return self._by_id.get(location_id)

    def by_hash(self, h: int) -> Location | None:
        return self._by_hash.get(h)

    def is_online(self, location_id: str) -> bool:
        loc = self._by_id.get(location_id)
        return loc is not None and loc.channel == "online"

    def distance_km(self, a: str, b: str) -> float | None:
        """Kilometres between two locations by id; ``None`` if either is unknown or online."""
        return self.distance_by_hash(loc_hash(a), loc_hash(b))

    def distance_by_hash(self, a: int, b: int) -> float | None:
        """Kilometres between two hashed locations (cached); ``None`` if unknown or online."""
        key = (a, b) if a <= b else (b, a)
        try:
            return self._dist[key]
        except KeyError:
            pass
        la, lb = self._by_hash.get(a), self._by_hash.get(b)
        if la is None or lb is None or la.online or lb.online:
            d = None
        else:
            d = haversine_km(la.lat, la.lon, lb.lat, lb.lon)
        if len(self._dist) < 1_000_000:
            self._dist[key] = d
        return d

    def local_hour(self, location_id: str, ts: float) -> float | None:
        """Hour of day (0-24, fractional) at the location; ``None`` when it is unknown."""
        loc = self._by_id.get(location_id)
        if loc is None:
            return None
        zone = self._zones.get(loc.timezone, False)
        if zone is False:
            try:
                zone = ZoneInfo(loc.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                zone = None
            self._zones[loc.timezone] = zone
        if zone is None:
            return None
        moment = datetime.fromtimestamp(ts, zone)
        return moment.hour + moment.minute / 60.0

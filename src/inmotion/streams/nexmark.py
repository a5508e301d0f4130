"""Nexmark: the online-auction benchmark of streaming systems (persons, auctions, bids), as
CloudEvents in three topics, and its queries in Flink SQL.

The generator follows the published model: of every 50 events one is a new person, 3 are new
auctions and 46 are bids; bids go mostly to recent ("hot") auctions and bidders; event times
grow by a fixed gap (`rate` events per second of event time). It is seeded, so a given
(events, seed) gives the same events on every machine: the engines can be compared on them."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from inmotion.events import Event
from inmotion.log import Log, Message, TopicConfig

TOPICS = ("persons", "auctions", "bids")
START = datetime(2026, 1, 1, tzinfo=UTC)
_PER_50 = (1, 3, 46)  # persons, auctions, bids in every 50 events
_HOT_RATIO = 100  # one bid in 100 goes anywhere, the others to the newest ("hot") auctions
_CHANNELS = ("Google", "Facebook", "Baidu", "Apple")
_STATES = ("AZ", "CA", "ID", "OR", "WA", "WY")
_CITIES = ("Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent")
_NAMES = ("Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter")
_SURNAMES = ("Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris")

DDL = """
CREATE TABLE person (
  id BIGINT, name STRING, emailAddress STRING, creditCard STRING, city STRING, state STRING,
  `dateTime` TIMESTAMP_LTZ(3), extra STRING,
  WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH ('topic' = 'persons');
CREATE TABLE auction (
  id BIGINT, itemName STRING, description STRING, initialBid BIGINT, reserve BIGINT,
  `dateTime` TIMESTAMP_LTZ(3), expires TIMESTAMP_LTZ(3), seller BIGINT, category BIGINT, extra STRING,
  WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH ('topic' = 'auctions');
CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
  `dateTime` TIMESTAMP_LTZ(3), extra STRING,
  WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH ('topic' = 'bids');
"""
"""The tables over the generator's topics (as Flink's Nexmark declares them; `dateTime` is quoted:
Flink 2's parser takes DATETIME for a keyword)."""

_RANKS = (
    "{0} FILTER (WHERE price < 10000) AS rank1_{1},"
    " {0} FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_{1},"
    " {0} FILTER (WHERE price >= 1000000) AS rank3_{1}"
)
"""q15-q17's three price ranks of an aggregate (what, named)."""

QUERIES = {
    "q0": "SELECT auction, bidder, price, `dateTime`, extra FROM bid",
    "q1": "SELECT auction, bidder, 0.908 * price AS price, `dateTime`, extra FROM bid",
    "q2": "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
    "q3": (
        "SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P ON A.seller = P.id"
        " WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')"
    ),
    "q4": (
        "SELECT Q.category, AVG(Q.final) FROM ("
        " SELECT MAX(B.price) AS final, A.category FROM auction A, bid B"
        " WHERE A.id = B.auction AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires GROUP BY A.id, A.category"
        ") Q GROUP BY Q.category"
    ),
    "q5-counts": (
        "SELECT auction, COUNT(*) AS num, window_start AS starttime, window_end AS endtime"
        " FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND))"
        " GROUP BY auction, window_start, window_end"
    ),
    "q5": (
        "SELECT AuctionBids.auction, AuctionBids.num FROM ("
        " SELECT auction, COUNT(*) AS num, window_start AS starttime, window_end AS endtime"
        " FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND))"
        " GROUP BY auction, window_start, window_end"
        ") AS AuctionBids JOIN ("
        " SELECT MAX(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime FROM ("
        "  SELECT COUNT(*) AS num, window_start AS starttime, window_end AS endtime"
        "  FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND))"
        "  GROUP BY auction, window_start, window_end"
        " ) AS CountBids GROUP BY CountBids.starttime, CountBids.endtime"
        ") AS MaxBids ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime"
        " AND AuctionBids.num >= MaxBids.maxn"
    ),
    "q11": (  # as published, with Flink's older group window (a session per bidder)
        "SELECT B.bidder, COUNT(*) AS bid_count, SESSION_START(B.`dateTime`, INTERVAL '10' SECOND) AS starttime,"
        " SESSION_END(B.`dateTime`, INTERVAL '10' SECOND) AS endtime"
        " FROM bid B GROUP BY B.bidder, SESSION(B.`dateTime`, INTERVAL '10' SECOND)"
    ),
    "q7": (
        "SELECT B.auction, B.price, B.bidder, B.`dateTime`, B.extra FROM bid B JOIN ("
        " SELECT MAX(price) AS maxprice, window_end AS `dateTime`"
        " FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))"
        " GROUP BY window_start, window_end"
        ") B1 ON B.price = B1.maxprice"
        " WHERE B.`dateTime` BETWEEN B1.`dateTime` - INTERVAL '10' SECOND AND B1.`dateTime`"
    ),
    "q8": (
        "SELECT P.id, P.name, P.starttime FROM ("
        " SELECT id, name, window_start AS starttime, window_end AS endtime"
        " FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))"
        " GROUP BY id, name, window_start, window_end"
        ") P JOIN ("
        " SELECT seller, window_start AS starttime, window_end AS endtime"
        " FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))"
        " GROUP BY seller, window_start, window_end"
        ") A ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime"
    ),
    "q9": (
        "SELECT id, itemName, description, initialBid, reserve, `dateTime`, expires, seller, category, extra,"
        " auction, bidder, price, bid_dateTime, bid_extra FROM ("
        " SELECT A.*, B.auction, B.bidder, B.price, B.`dateTime` AS bid_dateTime, B.extra AS bid_extra,"
        "  ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.`dateTime` ASC) AS rownum"
        " FROM auction A, bid B WHERE A.id = B.auction AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires"
        ") WHERE rownum <= 1"
    ),
    "q10": (  # as published but for its sink (files partitioned by day and minute)
        "SELECT auction, bidder, price, `dateTime`, extra,"
        " DATE_FORMAT(`dateTime`, 'yyyy-MM-dd'), DATE_FORMAT(`dateTime`, 'HH:mm') FROM bid"
    ),
    "q12": (  # processing time: the windows are those of the clock when the engine reads the bids
        "SELECT B.bidder, COUNT(*) AS bid_count, TUMBLE_START(B.p_time, INTERVAL '10' SECOND) AS starttime,"
        " TUMBLE_END(B.p_time, INTERVAL '10' SECOND) AS endtime FROM (SELECT *, PROCTIME() AS p_time FROM bid) B"
        " GROUP BY B.bidder, TUMBLE(B.p_time, INTERVAL '10' SECOND)"
    ),
    "q15": (
        "SELECT DATE_FORMAT(`dateTime`, 'yyyy-MM-dd') AS `day`, COUNT(*) AS total_bids,"
        f" {_RANKS.format('COUNT(*)', 'bids')}, COUNT(DISTINCT bidder) AS total_bidders,"
        f" {_RANKS.format('COUNT(DISTINCT bidder)', 'bidders')}, COUNT(DISTINCT auction) AS total_auctions,"
        f" {_RANKS.format('COUNT(DISTINCT auction)', 'auctions')}"
        " FROM bid GROUP BY DATE_FORMAT(`dateTime`, 'yyyy-MM-dd')"
    ),
    "q16": (
        "SELECT channel, DATE_FORMAT(`dateTime`, 'yyyy-MM-dd') AS `day`,"
        " MAX(DATE_FORMAT(`dateTime`, 'HH:mm')) AS `minute`, COUNT(*) AS total_bids,"
        f" {_RANKS.format('COUNT(*)', 'bids')}, COUNT(DISTINCT bidder) AS total_bidders,"
        f" {_RANKS.format('COUNT(DISTINCT bidder)', 'bidders')}, COUNT(DISTINCT auction) AS total_auctions,"
        f" {_RANKS.format('COUNT(DISTINCT auction)', 'auctions')}"
        " FROM bid GROUP BY channel, DATE_FORMAT(`dateTime`, 'yyyy-MM-dd')"
    ),
    "q17": (
        "SELECT auction, DATE_FORMAT(`dateTime`, 'yyyy-MM-dd') AS `day`, COUNT(*) AS total_bids,"
        f" {_RANKS.format('COUNT(*)', 'bids')}, MIN(price) AS min_price, MAX(price) AS max_price,"
        " AVG(price) AS avg_price, SUM(price) AS sum_price"
        " FROM bid GROUP BY auction, DATE_FORMAT(`dateTime`, 'yyyy-MM-dd')"
    ),
    "q18": (
        "SELECT auction, bidder, price, channel, url, `dateTime`, extra FROM ("
        " SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY `dateTime` DESC) AS rank_number"
        " FROM bid) WHERE rank_number <= 1"
    ),
    "q19": (
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number"
        " FROM bid) WHERE rank_number <= 10"
    ),
    "q20": (
        "SELECT auction, bidder, price, channel, url, B.`dateTime`, B.extra, itemName, description, initialBid,"
        " reserve, A.`dateTime`, expires, seller, category, A.extra"
        " FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id WHERE A.category = 10"
    ),
    "q21": (
        "SELECT auction, bidder, price, channel,"
        " CASE WHEN LOWER(channel) = 'apple' THEN '0' WHEN LOWER(channel) = 'google' THEN '1'"
        "  WHEN LOWER(channel) = 'facebook' THEN '2' WHEN LOWER(channel) = 'baidu' THEN '3'"
        "  ELSE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) END AS channel_id"
        " FROM bid WHERE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) IS NOT NULL"
        " OR LOWER(channel) IN ('apple', 'google', 'facebook', 'baidu')"
    ),
    "q22": (
        "SELECT auction, bidder, price, channel, SPLIT_INDEX(url, '/', 3) AS dir1,"
        " SPLIT_INDEX(url, '/', 4) AS dir2, SPLIT_INDEX(url, '/', 5) AS dir3 FROM bid"
    ),
}
"""The Nexmark queries the embedded engine runs as published (q5-counts is q5's inner aggregation:
bids per auction per sliding window; q10 without its file sink); the others need what the engine
lacks yet: q13 and q14 call user functions (q6 and q23 fail on Flink 2.3 itself)."""


def events(count: int, *, seed: int = 0, rate: int = 10_000, start: datetime = START) -> Iterator[tuple[str, Event]]:
    """`count` events, (topic, event), in event-time order."""
    rng = random.Random(seed)
    gap = timedelta(seconds=1) / rate
    persons = auctions = 0
    for n in range(count):
        at = start + n * gap
        kind = n % 50
        if kind < _PER_50[0]:
            persons += 1
            yield "persons", _event("person", n, at, _person(rng, 1000 + persons - 1, at))
        elif kind < _PER_50[0] + _PER_50[1]:
            auctions += 1
            seller = _recent(rng, 1000, persons)
            yield "auctions", _event("auction", n, at, _auction(rng, 1000 + auctions - 1, seller, at))
        else:
            hot = rng.randrange(_HOT_RATIO) > 0
            auction = _recent(rng, 1000, auctions) if hot else 1000 + rng.randrange(max(auctions, 1))
            bidder = _recent(rng, 1000, persons)
            yield "bids", _event("bid", n, at, _bid(rng, auction, bidder, at))


def write(
    log: Log, count: int, *, seed: int = 0, rate: int = 10_000, progress: Callable[[int], None] | None = None
) -> None:
    """Append `count` events to the Nexmark topics (created if missing), 10,000 at a time;
    `progress(done)` hears after each batch."""
    for topic in TOPICS:
        if topic not in log.list_topics():
            log.create_topic(topic, TopicConfig())
    batch: dict[str, list[Message]] = {topic: [] for topic in TOPICS}
    for done, (topic, event) in enumerate(events(count, seed=seed, rate=rate), 1):
        batch[topic].append(Message.from_event(event))
        if done % 10_000 == 0 or done == count:
            for name, messages in batch.items():
                if messages:
                    log.append(name, messages)
                    messages.clear()
            if progress is not None:
                progress(done)


def _event(kind: str, n: int, at: datetime, data: dict[str, Any]) -> Event:
    return Event(type=f"nexmark.{kind}", source="/nexmark", id=str(n), time=at, data=data)


def _recent(rng: random.Random, first: int, made: int) -> int:
    """One of the newest ids (of `made`, numbered from `first`), or the first if none yet."""
    if made == 0:
        return first
    return first + max(0, made - 1 - rng.randrange(min(made, 10)))


def _text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(length))


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _person(rng: random.Random, person: int, at: datetime) -> dict[str, Any]:
    name = f"{rng.choice(_NAMES)} {rng.choice(_SURNAMES)}"
    return {
        "id": person,
        "name": name,
        "emailAddress": f"{_text(rng, 7).replace(' ', 'x')}@{_text(rng, 5).replace(' ', 'x')}.com",
        "creditCard": " ".join(f"{rng.randrange(10000):04d}" for _ in range(4)),
        "city": rng.choice(_CITIES),
        "state": rng.choice(_STATES),
        "dateTime": _iso(at),
        "extra": _text(rng, 20),
    }


def _auction(rng: random.Random, auction: int, seller: int, at: datetime) -> dict[str, Any]:
    initial = _price(rng)
    return {
        "id": auction,
        "itemName": _text(rng, 12),
        "description": _text(rng, 40),
        "initialBid": initial,
        "reserve": initial + _price(rng),
        "dateTime": _iso(at),
        "expires": _iso(at + timedelta(seconds=rng.randrange(10, 60))),
        "seller": seller,
        "category": 10 + rng.randrange(5),
        "extra": _text(rng, 20),
    }


def _bid(rng: random.Random, auction: int, bidder: int, at: datetime) -> dict[str, Any]:
    path = "/".join(_text(rng, 5).replace(" ", "_") for _ in range(3))
    url = f"https://www.nexmark.com/{path}/item.htm?query=1"
    if rng.randrange(10):
        channel = rng.choice(_CHANNELS)
    else:  # one bid in 10 comes through a channel of its own, named in the url too
        number = rng.randrange(10_000)
        channel, url = f"channel-{number}", f"{url}&channel_id={number}"
    return {
        "auction": auction,
        "bidder": bidder,
        "price": _price(rng),
        "channel": channel,
        "url": url,
        "dateTime": _iso(at),
        "extra": _text(rng, 20),
    }


def _price(rng: random.Random) -> int:
    return round(10 ** (rng.random() * 6) * 100)

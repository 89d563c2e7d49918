"""Locust suite for checkout-bench: the proof of concept's flash sale, one task per strategy.

Two kinds of buyers in the seed's proportions: ``HotProductHunter`` (weight 100) buys the hot
product, ``RegularCustomer`` (weight 3) buys a random product from the catalogue. Every task is
tagged with the strategy it drives (``memory``, ``sql-atomic``, ``redis-lua``, …), so
``--tags sql-atomic`` runs one strategy; ``seed_compat`` drives the seed-compatible
``/index.php`` endpoint with the seed's form protocol.

Request names are what the report reads: ``<strategy>`` for an accepted order (201/202),
``<strategy> (sold out)`` for 409, ``seed:<mode>`` / ``seed:<mode> (sold out)`` (418) on the
seed endpoint. Regular customers' requests carry `` (regular)`` after the strategy
(``sql-atomic (regular)``, ``sql-atomic (regular) (sold out)``), so the hot product's sales are
counted apart from theirs. Anything else is a failure whose message carries the status and the
error code.

When the run writes CSVs (``--csv PREFIX``), the quit hook saves the server's ``GET /admin/audit``
as ``PREFIX_audit.json`` beside them (with ``ADMIN_TOKEN`` as a bearer token when it is set): the
report reads the anomalies from it, and without it marks the verdict unknown.

Environment (besides Locust's own ``LOCUST_*``):

    PRODUCTS      catalogue size regular customers pick from (default 1000, as the server's
                  default catalogue and the reset plan in locust/README.md)
    HOT_PRODUCT   the hunted product (default 100)
    SEED_MODE     ``mode`` of the seed endpoint (default ``stream``: the seed's stream mode,
                  ``stream-deferred`` on this server; ``simple``, ``redis`` or any strategy name)
    SEED_AUTH     ``session`` (default: log in with ``action=auth`` first, as the seed did) or
                  ``skip`` (send ``skip_auth=1``)
    ADMIN_TOKEN   the server's admin token, for the audit saved at the end (unset: the server
                  answers admin calls from loopback only)
"""

from __future__ import annotations

import json
import logging
import os
import random
import string
import uuid

import requests
from locust import HttpUser, constant_throughput, events, tag, task

# The server's strategies when this file was written (README, "Strategies"). Tags must be
# static, so the list is too; at test start it is checked against GET /strategies.
STRATEGIES = (
    "memory",
    "sql-naive",
    "sql-for-update",
    "sql-atomic",
    "sql-coalesce",
    "sql-skip-locked",
    "sql-optimistic",
    "redis-decr",
    "redis-lua",
    "redis-orderlog",
    "stream",
    "stream-deferred",
    "queue-nats",
)
SEED_TAG = "seed_compat"

PRODUCTS = int(os.environ.get("PRODUCTS", "1000"))
HOT_PRODUCT = int(os.environ.get("HOT_PRODUCT", "100"))
SEED_MODE = os.environ.get("SEED_MODE", "stream")
SEED_AUTH = os.environ.get("SEED_AUTH", "session")

ACCEPTED = (201, 202)
SOLD_OUT = 409
SEED_ACCEPTED = 200
SEED_SOLD_OUT = 418

log = logging.getLogger("checkout")


def delivery() -> dict[str, str]:
    """A random delivery block, shaped like the seed's."""
    digits = "".join(random.choices(string.digits, k=9))
    box = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
    return {
        "address": f"Kyiv, Khreshchatyk {random.randint(1, 200)}",
        "phone": f"+380{digits}",
        "email": f"user-{box}@example.com",
    }


def error_code(response) -> str:
    """The JSON ``error`` code of an answer, or a short excerpt of a non-JSON body."""
    try:
        return str(response.json().get("error", "?"))
    except (ValueError, AttributeError):
        text = (response.text or "").strip().replace("\n", " ")
        return text[:120] or "no body"


class Buyer(HttpUser):
    """Shared purchase logic; subclasses choose which product they buy."""

    abstract = True
    host = "http://127.0.0.1:8080"
    wait_time = constant_throughput(0.1)
    # Appended to the strategy in request names: the report counts hot-product sales apart.
    name_suffix = ""

    def on_start(self) -> None:
        # Names the buyer in every order (the contract's `user`): no session needed.
        self.user_id = f"locust-{uuid.uuid4().hex[:12]}"
        self.seed_session = False

    def product_id(self) -> int:
        raise NotImplementedError

    def purchase(self, strategy: str) -> None:
        body = {
            "items": [{"product_id": self.product_id(), "quantity": 1}],
            "delivery": delivery(),
            "user": self.user_id,
        }
        with self.client.post(
            f"/strategies/{strategy}/purchase",
            json=body,
            headers={"X-Strategy": strategy},
            name=f"{strategy}{self.name_suffix}",
            catch_response=True,
        ) as response:
            if response.status_code in ACCEPTED:
                response.success()
            elif response.status_code == SOLD_OUT:
                response.request_meta["name"] = f"{strategy}{self.name_suffix} (sold out)"
                response.success()
            elif response.status_code == 0:
                response.failure(f"no answer: {response.error}")
            else:
                response.failure(f"HTTP {response.status_code} {error_code(response)}")

    def seed_login(self) -> None:
        """Opens a session the way the seed did: ``action=auth``; the cookie rides along."""
        with self.client.post(
            "/index.php?action=auth",
            data={"username": self.user_id},
            name="seed:auth",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                response.success()
                self.seed_session = True
            else:
                response.failure(f"HTTP {response.status_code} {error_code(response)}")

    def seed_purchase(self) -> None:
        params = f"action=purchase&mode={SEED_MODE}"
        if SEED_AUTH == "skip":
            params += "&skip_auth=1"
        elif not self.seed_session:
            self.seed_login()
            if not self.seed_session:
                return
        form = {
            "items[0][product_id]": self.product_id(),
            "items[0][count]": 1,
            "username": self.user_id,
        }
        form.update({f"delivery[{key}]": value for key, value in delivery().items()})
        name = f"seed:{SEED_MODE}{self.name_suffix}"
        with self.client.post(
            f"/index.php?{params}", data=form, name=name, catch_response=True
        ) as response:
            if response.status_code == SEED_ACCEPTED:
                response.success()
            elif response.status_code == SEED_SOLD_OUT:
                response.request_meta["name"] = f"{name} (sold out)"
                response.success()
            elif response.status_code == 0:
                response.failure(f"no answer: {response.error}")
            else:
                if response.status_code == 401:
                    self.seed_session = False  # expired: log in again next time
                response.failure(f"HTTP {response.status_code} {error_code(response)}")

    @tag("memory")
    @task
    def memory(self) -> None:
        self.purchase("memory")

    @tag("sql-naive")
    @task
    def sql_naive(self) -> None:
        self.purchase("sql-naive")

    @tag("sql-for-update")
    @task
    def sql_for_update(self) -> None:
        self.purchase("sql-for-update")

    @tag("sql-atomic")
    @task
    def sql_atomic(self) -> None:
        self.purchase("sql-atomic")

    @tag("sql-coalesce")
    @task
    def sql_coalesce(self) -> None:
        self.purchase("sql-coalesce")
    @tag("sql-skip-locked")
    @task
    def sql_skip_locked(self) -> None:
        self.purchase("sql-skip-locked")

    @tag("sql-optimistic")
    @task
    def sql_optimistic(self) -> None:
        self.purchase("sql-optimistic")

    @tag("redis-decr")
    @task
    def redis_decr(self) -> None:
        self.purchase("redis-decr")

    @tag("redis-lua")
    @task
    def redis_lua(self) -> None:
        self.purchase("redis-lua")

    @tag("redis-orderlog")
    @task
    def redis_orderlog(self) -> None:
        self.purchase("redis-orderlog")

    @tag("stream")
    @task
    def stream(self) -> None:
        self.purchase("stream")

    @tag("stream-deferred")
    @task
    def stream_deferred(self) -> None:
        self.purchase("stream-deferred")

    @tag("queue-nats")
    @task
    def queue_nats(self) -> None:
        self.purchase("queue-nats")

    @tag(SEED_TAG)
    @task
    def seed_compat(self) -> None:
        self.seed_purchase()


class HotProductHunter(Buyer):
    """Thousands of these hunt the one hot product (the seed's weight 100)."""

    weight = 100

    def product_id(self) -> int:
        return HOT_PRODUCT


class RegularCustomer(Buyer):
    """Buys a random product from the catalogue (the seed's weight 3)."""

    weight = 3
    name_suffix = " (regular)"

    def product_id(self) -> int:
        return random.randint(1, PRODUCTS)


@events.quitting.add_listener
def save_audit(environment, **_kwargs) -> None:
    """Saves the server's audit beside the CSVs, so the report can judge the run."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    host = (environment.host or Buyer.host).rstrip("/")
    token = os.environ.get("ADMIN_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = requests.get(f"{host}/admin/audit", headers=headers, timeout=30)
        answer.raise_for_status()
        audit = answer.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("could not save %s/admin/audit (%s): the report will say the verdict is unknown", host, exc)
        return
    with open(f"{prefix}_audit.json", "w", encoding="utf-8") as out:
        json.dump(audit, out, indent=2)


@events.test_start.add_listener
def check_strategies(environment, **_kwargs) -> None:
    """Warns when the server's strategies and this file's tasks disagree, or a tag matches none."""
    options = environment.parsed_options
    tags = set(getattr(options, "tags", None) or [])
    unknown_tags = tags - set(STRATEGIES) - {SEED_TAG}
    if unknown_tags:
        log.warning(
            "--tags %s match no task; known: %s",
            ",".join(sorted(unknown_tags)),
            ",".join((*STRATEGIES, SEED_TAG)),
        )
    host = (environment.host or Buyer.host).rstrip("/")
    try:
        answer = requests.get(f"{host}/strategies", timeout=3)
        answer.raise_for_status()
        listed = answer.json()
        served = {entry["name"] for entry in listed}
        # Every strategy is listed; on a database it is not ported to, `available` is false.
        elsewhere = {entry["name"] for entry in listed if entry.get("available") is False}
        database = next((entry.get("database") for entry in listed), None)
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        log.warning("could not read %s/strategies (%s): tasks not checked", host, exc)
        return
    chosen_elsewhere = sorted(elsewhere & tags if tags else elsewhere)
    if chosen_elsewhere:
        log.warning(
            "the server's database (%s) does not run %s: those tasks will answer 501",
            database,
            chosen_elsewhere,
        )
    missing = set(STRATEGIES) - served
    extra = served - set(STRATEGIES)
    if missing:
        log.warning("the server has no strategy %s: those tasks will fail", sorted(missing))
    if extra:
        log.warning(
            "the server has strategies this suite has no task for: %s "
            "(add a tagged task to locust/locustfile.py)",
            json.dumps(sorted(extra)),
        )

"""The local services started by `streamrec services up` (make test starts them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient, ConfigResource

from streamrec.infra.services import KafkaBroker, LocalServices, new_cluster_id
from streamrec.settings import Settings
from streams.events import Interaction, Topics
from streams.producer import EventProducer
from tests.support import REPO_ROOT, settings_env


def test_up_is_idempotent_and_status_reports_both(live_settings: Settings) -> None:
    services = LocalServices(
        live_settings.model_copy(update={"state_dir": Settings().resolved().state_dir})
    )
    pids = [s.pid for s in services.status()]
    services.up()  # already running: must leave them alone
    after = services.status()
    assert [s.pid for s in after] == pids
    assert all(s.running for s in after), after


def test_event_topics_have_partitions_and_keep_history(live_settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": live_settings.bootstrap_servers})
    topics = Topics(live_settings.topic_prefix)
    metadata = admin.list_topics(timeout=10).topics
    for name in topics.all():
        assert len(metadata[name].partitions) >= 3, name
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in topics.all()]
    for future in admin.describe_configs(resources).values():
        config = future.result()
        assert config["retention.ms"].value == "-1"
        assert config["retention.bytes"].value == "-1"


def test_status_command_shows_consumer_group_lag(live_settings: Settings) -> None:
    from confluent_kafka import Consumer

    topics = Topics(live_settings.topic_prefix)
    with EventProducer(live_settings.bootstrap_servers, topics) as producer:
        for i in range(5):
            producer.send(Interaction(user_id=f"u{i}", item_id="i", action="view"))
    group = f"{live_settings.topic_prefix}lag-probe"
    consumer = Consumer(
        {
            "bootstrap.servers": live_settings.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topics.interactions])
    message = None
    while message is None:
        message = consumer.poll(5)
    consumer.commit(message, asynchronous=False)
    consumer.close()
    env = settings_env(
        live_settings.model_copy(update={"state_dir": Settings().resolved().state_dir})
    )
    result = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "services", "status"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if group in line]
    assert lines, result.stdout
    total_lag = sum(int(line.split()[-1]) for line in lines)
    assert total_lag == 4  # one of five consumed and committed
    # The consumer has left: its group's lag is marked as nobody's to catch up.
    assert all(line.split()[3] == "idle" for line in lines), lines


def test_storage_formats_with_a_cluster_id_that_looks_like_a_flag(tmp_path: Path) -> None:
    """Random cluster ids are URL-safe base64 and may start with "-"."""
    settings = Settings(state_dir=tmp_path / "state").resolved()
    broker = KafkaBroker(settings)
    broker.format_storage(broker.ensure_jars(), "-" + new_cluster_id()[1:])
    meta = (broker.data_dir / "meta.properties").read_text()
    assert "cluster.id=-" in meta

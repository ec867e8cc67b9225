"""The local cluster's layout and the Kafka security settings, without starting a JVM."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streamrec.infra.cluster import KafkaCluster, nodes_in
from streamrec.infra.services import KafkaBroker, LocalServices
from streamrec.settings import Settings
from streams.app import _credentials
from streams.spark.job import kafka_java_security


def _cluster_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "state_dir": tmp_path / "state",
        "kafka_port": 23092,
        "kafka_controller_port": 23093,
        "kafka_brokers": 3,
    }
    values.update(overrides)
    return Settings(**values).resolved()  # type: ignore[arg-type]


def test_three_brokers_make_a_cluster_that_every_client_lists(tmp_path: Path) -> None:
    settings = _cluster_settings(tmp_path)
    assert settings.bootstrap_servers == "127.0.0.1:23092,127.0.0.1:23094,127.0.0.1:23096"
    assert settings.replication_factor == 3
    assert isinstance(LocalServices(settings).kafka, KafkaCluster)
    assert isinstance(LocalServices(Settings(state_dir=tmp_path)).kafka, KafkaBroker)
    assert Settings().replication_factor == 1


def test_each_node_has_its_ports_and_the_cluster_its_guarantees(tmp_path: Path) -> None:
    cluster = KafkaCluster(_cluster_settings(tmp_path))
    node = cluster.node(2)
    node.proc.dir.mkdir(parents=True)
    node._write_config()
    config = dict(line.split("=", 1) for line in node.config_file.read_text().splitlines() if line)
    assert config["node.id"] == "2"
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:23094,CONTROLLER://127.0.0.1:23095"
    assert config["controller.quorum.voters"] == (
        "1@127.0.0.1:23093,2@127.0.0.1:23095,3@127.0.0.1:23097"
    )
    assert config["default.replication.factor"] == "3"
    assert config["min.insync.replicas"] == "2"
    assert config["offsets.topic.replication.factor"] == "3"
    assert config["unclean.leader.election.enable"] == "false"
    assert nodes_in(cluster.settings.state_dir) == 0  # a folder, but nothing running


def test_a_stopped_cluster_says_which_nodes_are_down(tmp_path: Path) -> None:
    status = KafkaCluster(_cluster_settings(tmp_path, kafka_port=1, kafka_controller_port=2))
    report = status.status()
    assert not report.running
    assert "0/3 nodes up" in report.detail and "kafka-1" in report.detail


def test_plaintext_adds_no_security_settings() -> None:
    settings = Settings()
    assert settings.kafka_security() == {}
    assert kafka_java_security(settings) == {}
    assert _credentials(settings) is None


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="STREAMREC_KAFKA_SASL_USERNAME"):
        Settings(kafka_security_protocol="SASL_SSL")


def test_sasl_reaches_librdkafka_faust_and_spark() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="streamrec",
        kafka_sasl_password='pa"ss',  # type: ignore[arg-type]
    )
    assert settings.kafka_security() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "streamrec",
        "sasl.password": 'pa"ss',
    }
    assert settings.kafka_client_config(**{"group.id": "g"})["sasl.username"] == "streamrec"
    java = kafka_java_security(settings)
    assert java["sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="streamrec" password="pa\\"ss";'
    )
    credentials = _credentials(settings)
    assert credentials is not None and credentials.username == "streamrec"
    assert credentials.ssl_context is not None

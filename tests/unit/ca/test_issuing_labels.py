"""Issuing-CA generation labels and the CRL file names built from them."""

from __future__ import annotations

import pytest

from mailpki.ca.settings import (
    CASettings,
    crl_scope,
    full_crl_name,
    is_issuing_label,
    issuing_label,
    partition_crl_name,
)


def test_labels_of_generations() -> None:
    assert [issuing_label(n) for n in (1, 2, 3, 10)] == [
        "issuing",
        "issuing-g2",
        "issuing-g3",
        "issuing-g10",
    ]
    with pytest.raises(ValueError):
        issuing_label(0)


@pytest.mark.parametrize("generation", [1, 2, 9, 10, 123])
@pytest.mark.parametrize("partition", [None, 0, 7, 123456])
def test_crl_names_round_trip(generation: int, partition: int | None) -> None:
    label = issuing_label(generation)
    name = full_crl_name(label) if partition is None else partition_crl_name(partition, label)
    assert crl_scope(name) == (label, partition)
    assert is_issuing_label(label)


def test_generation_one_keeps_its_names() -> None:
    assert crl_scope("issuing.crl") == ("issuing", None)
    assert crl_scope("issuing-3.crl") == ("issuing", 3)
    assert crl_scope("root.crl") == ("root", None)


@pytest.mark.parametrize(
    "name",
    [
        "issuing-g1.crl",  # generation 1 has no -g suffix
        "issuing-g0.crl",
        "issuing-g02.crl",
        "issuing-g2-01.crl",
        "issuing-g2-.crl",
        "issuing-g-2.crl",
        "issuing-g2.crl.bak",
        "../issuing-g2.crl",
        "issuing-g2-3-4.crl",
        "issuing-g99999.crl",
        "ISSUING-G2.crl",
        "issuing-g2",
        "",
    ],
)
def test_names_we_never_publish(name: str) -> None:
    assert crl_scope(name) is None


@pytest.mark.parametrize("label", ["root", "self", "issuing-g1", "issuing-x", "issuing-g2-1"])
def test_other_issuers_are_not_issuing_labels(label: str) -> None:
    assert not is_issuing_label(label)


def test_urls_name_the_generation() -> None:
    settings = CASettings(base_url="http://pki.example.com")
    first = settings.urls_for_partition(4)
    later = settings.urls_for_partition(4, "issuing-g2")
    assert first.crl == "http://pki.example.com/crl/issuing-4.crl"
    assert first.ca_issuers == "http://pki.example.com/ca/issuing.crt"
    assert later.crl == "http://pki.example.com/crl/issuing-g2-4.crl"
    assert later.ca_issuers == "http://pki.example.com/ca/issuing-g2.crt"

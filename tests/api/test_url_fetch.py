"""URL references are fetched server-side, and safely: the SSRF suite against a local server."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from daguerre.api import create_app
from daguerre.fetch import UrlPolicy
from daguerre.settings import Settings
from daguerre.wire import State
from support.imageserver import image_servers


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with image_servers(tmp_path_factory.mktemp("tls")) as running:
        yield running


@pytest.fixture
def make_client(tmp_path, store, blobs, models_file):
    @contextmanager
    def make(**overrides):
        settings = Settings(data_dir=tmp_path / "data", models_file=models_file, workers=0, **overrides)
        with TestClient(create_app(settings, store, blobs), raise_server_exceptions=False) as client:
            yield client

    return make


def post_url(client, auth, url, path="image_ref"):
    if path == "source":
        body = {"prompt": "x", "type": "image_edit", "source": {"url": url}}
    else:
        body = {"prompt": "x", "image_ref": [{"url": url}]}
    return client.post("/v1/generations", json=body, headers=auth)


def detail(response):
    return response.status_code, response.json()["detail"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1:{port}/image.png", "address not allowed"),  # loopback
        ("https://localhost:{port}/image.png", "address not allowed"),  # a name that resolves to loopback
        ("https://[::1]:{port}/image.png", "address not allowed"),
        ("https://10.20.30.40/image.png", "address not allowed"),  # private
        ("https://192.168.1.1/image.png", "address not allowed"),
        ("https://169.254.169.254/latest/meta-data", "address not allowed"),  # link-local (cloud metadata)
        ("https://100.64.0.1/image.png", "address not allowed"),  # CGNAT
        ("https://[::ffff:127.0.0.1]:{port}/image.png", "address not allowed"),  # IPv4-mapped loopback
        ("https://0.0.0.0:{port}/image.png", "address not allowed"),
        # IPv6 forms that embed an IPv4 address are judged by that address
        ("https://[64:ff9b::a9fe:a9fe]/latest/meta-data", "address not allowed"),  # NAT64 of 169.254.169.254
        ("https://[2002:a9fe:a9fe::1]/image.png", "address not allowed"),  # 6to4 of 169.254.169.254
        ("https://[::a9fe:a9fe]/image.png", "address not allowed"),  # IPv4-compatible
        ("https://[::7f00:1]:{port}/image.png", "address not allowed"),  # IPv4-compatible loopback
        ("https://[fec0::1]/image.png", "address not allowed"),  # site-local
        ("http://example.com/image.png", "https required"),
        ("https://[::1/x.png", "invalid URL"),  # unclosed IPv6 bracket
        ("https://0177.0.0.1/x.png", "invalid URL"),  # octal IPv4
        ("https://256.1.1.1/x.png", "invalid URL"),
        ("ftp://example.com/image.png", "https required"),
    ],
)
def test_refused_by_default(make_client, auth, servers, url, reason):
    with make_client() as client:
        response = post_url(client, auth, url.format(port=servers.https_port))
    assert detail(response) == (422, f"image_ref[0]: failed to fetch URL ({reason})")


def test_the_local_server_is_reachable_only_when_private_networks_are_allowed(
    make_client, auth, worker, servers
):
    with make_client() as client:
        assert post_url(client, auth, servers.https + "/image.png").status_code == 422
    with make_client(url_allow_private=True, url_ca_bundle=servers.ca_file) as client:
        response = post_url(client, auth, servers.https + "/image.png", path="source")
        assert response.status_code == 201, response.text
        assert worker.run_once().state == State.COMPLETED
        body = client.get(f"/v1/generations/{response.json()['id']}", headers=auth).json()
        assert body["state"] == "completed"
    with make_client(url_allow_private=True, url_allow_http=True) as client:
        assert post_url(client, auth, servers.http + "/image.png").status_code == 201


def test_an_allowed_network_can_be_named(make_client, auth, servers):
    with make_client(url_allowed_networks=["127.0.0.1/32"], url_ca_bundle=servers.ca_file) as client:
        assert post_url(client, auth, servers.https + "/image.png").status_code == 201
        # ... but 127.0.0.2 is still loopback, and still refused
        other = f"https://127.0.0.2:{servers.https_port}/image.png"
        assert detail(post_url(client, auth, other)) == (
            422,
            "image_ref[0]: failed to fetch URL (address not allowed)",
        )


def test_every_redirect_hop_is_checked(make_client, auth, servers):
    with make_client(url_allowed_networks=["127.0.0.1/32"], url_ca_bundle=servers.ca_file) as client:
        to_private = f"{servers.https}/redirect?to=https://127.0.0.2:{servers.https_port}/image.png"
        assert detail(post_url(client, auth, to_private)) == (
            422,
            "image_ref[0]: failed to fetch URL (address not allowed)",
        )
        to_http = f"{servers.https}/redirect?to={servers.http}/image.png"
        assert detail(post_url(client, auth, to_http)) == (
            422,
            "image_ref[0]: failed to fetch URL (redirect to http not allowed)",
        )
        to_image = f"{servers.https}/redirect?to=/image.png"
        assert post_url(client, auth, to_image).status_code == 201


def test_slow_servers_time_out(make_client, auth, servers):
    with make_client(url_allow_private=True, url_ca_bundle=servers.ca_file, url_timeout_s=1.0) as client:
        response = post_url(client, auth, servers.https + "/slow")
    assert detail(response) == (422, "image_ref[0]: failed to fetch URL (timeout)")


def test_bodies_are_cut_off_past_50_mb(make_client, auth, servers):
    with make_client(url_allow_private=True, url_ca_bundle=servers.ca_file) as client:
        assert detail(post_url(client, auth, servers.https + "/endless")) == (
            413,
            "image_ref[0]: image exceeds 50 MB limit",
        )
        assert detail(post_url(client, auth, servers.https + "/big.png")) == (
            413,
            "image_ref[0]: image exceeds 50 MB limit",
        )


def test_http_errors_non_images_and_unreachable_hosts(make_client, auth, servers):
    with make_client(url_allow_private=True, url_allow_http=True, url_ca_bundle=servers.ca_file) as client:
        assert detail(post_url(client, auth, servers.https + "/missing")) == (
            422,
            "image_ref[0]: failed to fetch URL (HTTP 404)",
        )
        assert detail(post_url(client, auth, servers.https + "/page.html")) == (
            422,
            "image_ref[0]: content-type is not an image",
        )
        assert detail(post_url(client, auth, "http://127.0.0.1:9/image.png")) == (
            422,
            "image_ref[0]: failed to fetch URL",
        )
    with make_client(url_allow_private=True) as client:  # the test CA is not trusted: TLS fails
        assert detail(post_url(client, auth, servers.https + "/image.png")) == (
            422,
            "image_ref[0]: failed to fetch URL",
        )


def test_all_urls_of_a_request_are_fetched_and_the_first_failure_answers(make_client, auth, servers):
    with make_client(url_allow_private=True, url_ca_bundle=servers.ca_file) as client:
        body = {
            "prompt": "x",
            "type": "image_edit",
            "source": {"url": servers.https + "/image.png"},
            "image_ref": [{"url": servers.https + "/image.png"}, {"url": servers.https + "/missing"}],
        }
        assert detail(client.post("/v1/generations", json=body, headers=auth)) == (
            422,
            "image_ref[1]: failed to fetch URL (HTTP 404)",
        )


def test_url_ingestion_can_be_switched_off(make_client, auth, servers):
    with make_client(url_ingestion=False) as client:
        assert detail(post_url(client, auth, servers.https + "/image.png")) == (
            503,
            "Image URL ingestion unavailable",
        )
        data_ref = {"prompt": "x", "image_ref": [{"data": "iVBORw0KGgo=", "media_type": "image/png"}]}
        assert client.post("/v1/generations", json=data_ref, headers=auth).status_code == 201


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("64:ff9b::808:808", True),  # NAT64 of a public address
        ("2002:808:808::1", True),  # 6to4 of a public address
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of the metadata address
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::808:808", False),  # local-use NAT64 prefix
        ("2002:c0a8:101::1", False),  # 6to4 of 192.168.1.1
        ("::a9fe:a9fe", False),  # IPv4-compatible
        ("::ffff:a9fe:a9fe", False),  # IPv4-mapped
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo: its client is a documentation address
        ("fec0::1", False),  # site-local
        ("fc00::1", False),  # unique local
        ("fe80::1%eth0", False),  # link-local with a zone
    ],
)
def test_ipv6_forms_are_judged_by_the_ipv4_address_they_reach(address, allowed):
    assert UrlPolicy().address_allowed(address) is allowed


def test_allowing_private_networks_still_refuses_embedded_multicast_and_unspecified():
    policy = UrlPolicy(allow_private=True)
    assert policy.address_allowed("64:ff9b::a00:1")  # private is allowed now
    assert not policy.address_allowed("64:ff9b::e000:1")  # 224.0.0.1, multicast
    assert not policy.address_allowed("::ffff:0.0.0.0")

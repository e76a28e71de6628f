"""Unit tests of the rate-limit header parser."""

from __future__ import annotations

import pytest

from throttling.core.rate_limit_headers import RateLimitInfo, parse_rate_limit_headers, parse_retry_after

NOW = 1_445_412_470.0  # Wed, 21 Oct 2015 07:27:50 GMT


@pytest.mark.parametrize(
    ("value", "wait_sec"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
        ("Wednesday, 21-Oct-15 07:28:00 GMT", 10.0),
        ("Wed Oct 21 07:28:00 2015", 10.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),
    ],
)
def test_retry_after_reads_delta_seconds_and_http_dates(value, wait_sec):
    # GIVEN a Retry-After value / WHEN it is parsed / THEN the wait is in seconds from now, never negative
    assert parse_retry_after(value, NOW) == pytest.approx(wait_sec)


@pytest.mark.parametrize("value", ["", "soon", "-5", "1e3", "٣", "NaN", "inf"])
def test_retry_after_garbage_is_no_information(value):
    # GIVEN / WHEN / THEN
    assert parse_retry_after(value, NOW) is None


def test_x_ratelimit_headers_with_reset_as_epoch_seconds():
    # GIVEN a GitHub-style exhausted quota resetting at an epoch second
    headers = {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 30)}

    # WHEN they are parsed
    info = parse_rate_limit_headers(headers, now=NOW)

    # THEN the wait runs until the reset
    assert info == RateLimitInfo(wait_sec=30.0, remaining=0, limit=60)


def test_x_ratelimit_reset_as_delta_seconds_and_as_epoch_milliseconds():
    # GIVEN / WHEN a small reset (a delta) and a huge one (epoch milliseconds)
    delta = parse_rate_limit_headers({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "12"}, now=NOW)
    millis = parse_rate_limit_headers(
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW * 1000) + 2_500)}, now=NOW
    )

    # THEN both become seconds to wait
    assert delta.wait_sec == 12.0
    assert millis.wait_sec == pytest.approx(2.5)


def test_reset_is_not_a_wait_while_requests_remain():
    # GIVEN a quota with requests left
    headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "42", "X-RateLimit-Reset": "30"}

    # WHEN / THEN nothing says to wait
    assert parse_rate_limit_headers(headers, now=NOW) == RateLimitInfo(wait_sec=None, remaining=42, limit=100)


def test_reset_in_the_past_is_a_zero_wait():
    # GIVEN / WHEN an epoch reset that has already passed
    info = parse_rate_limit_headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) - 100)}, now=NOW)

    # THEN the wait is 0, not negative
    assert info.wait_sec == 0.0


def test_early_ietf_draft_separate_fields():
    # GIVEN the draft-03 style fields, with policies after the quota
    headers = {"RateLimit-Limit": "10, 10;w=1, 1000;w=3600", "RateLimit-Remaining": "0", "RateLimit-Reset": "4"}

    # WHEN / THEN the lowest quota is the limit, and the published rate is the one both policies allow (1,000 an hour)
    assert parse_rate_limit_headers(headers, now=NOW) == RateLimitInfo(
        wait_sec=4.0, remaining=0, limit=10, published_per_sec=1000 / 3600, window_sec=3600.0)


def test_structured_ratelimit_dictionary_form():
    # GIVEN / WHEN the draft-07 dictionary form
    info = parse_rate_limit_headers({"RateLimit": "limit=10, remaining=0, reset=5"}, now=NOW)

    # THEN
    assert info == RateLimitInfo(wait_sec=5.0, remaining=0, limit=10)


def test_structured_ratelimit_list_form_with_policy():
    # GIVEN the draft-08 list form and its policy field
    headers = {"RateLimit": '"default";r=0;t=5', "RateLimit-Policy": '"default";q=100;w=10'}

    # WHEN / THEN the policy's quota over its window is the published rate
    assert parse_rate_limit_headers(headers, now=NOW) == RateLimitInfo(
        wait_sec=5.0, remaining=0, limit=100, published_per_sec=10.0, window_sec=10.0)


def test_policy_with_quota_as_the_item():
    # GIVEN / WHEN / THEN `RateLimit-Policy: 10;w=1`
    assert parse_rate_limit_headers({"ratelimit-policy": "10;w=1"}, now=NOW).limit == 10


# -- the published rate: quota over window, only where one policy states both ---------------------

@pytest.mark.parametrize(("headers", "per_sec", "window_sec"), [
    ({"RateLimit-Policy": "10;w=1"}, 10.0, 1.0),
    ({"RateLimit-Policy": "5;w=2"}, 2.5, 2.0),
    ({"RateLimit-Policy": '"default";q=100;w=10'}, 10.0, 10.0),
    ({"RateLimit-Policy": "1;w=0.5"}, 2.0, 0.5),
    ({"RateLimit": '"default";q=50;w=5;r=3;t=1'}, 10.0, 5.0),
    ({"RateLimit-Limit": "10, 10;w=1"}, 10.0, 1.0),
], ids=["policy, quota as the item", "policy, awkward rate", "policy, q parameter", "policy, fractional window",
        "structured RateLimit item", "early draft separate field"])
def test_a_policy_with_a_window_publishes_its_rate(headers, per_sec, window_sec):
    # GIVEN / WHEN one policy stating its quota and window
    info = parse_rate_limit_headers(headers, now=NOW)

    # THEN the published rate is the quota over the window
    assert (info.published_per_sec, info.window_sec) == (per_sec, window_sec)


@pytest.mark.parametrize("headers", [
    {"X-RateLimit-Limit": "5000"},
    {"RateLimit-Limit": "10"},
    {"RateLimit": "limit=10, remaining=3, reset=1"},
    {"RateLimit": '"default";r=0;t=5'},
    {"RateLimit-Policy": '"default";q=100'},
    {"RateLimit-Policy": '"default";w=10'},
    {"RateLimit-Policy": "0;w=1"},
    {"RateLimit-Policy": "10;w=0"},
    {"RateLimit-Policy": "10;w=-1"},
    {"RateLimit-Policy": "10;w=soon"},
], ids=["x-ratelimit limit alone (github: per hour)", "draft limit alone", "draft-07 dictionary", "list item, no quota",
        "policy without a window", "policy without a quota", "zero quota", "zero window", "negative window",
        "garbage window"])
def test_no_window_or_no_quota_publishes_no_rate(headers):
    # GIVEN / WHEN headers that never state a quota and its window together
    info = parse_rate_limit_headers(headers, now=NOW)

    # THEN no rate is guessed
    assert (info.published_per_sec, info.window_sec) == (None, None)


def test_the_lowest_published_rate_wins_and_a_window_is_never_borrowed_from_another_header():
    # GIVEN a per-second policy, a stricter per-minute one, and a limit with no window of its own
    headers = [
        ("RateLimit-Policy", '"burst";q=10;w=1, "sustained";q=300;w=60'),
        ("X-RateLimit-Limit", "1"),
        ("RateLimit-Policy", "20;w=1"),
    ]

    # WHEN they are parsed
    info = parse_rate_limit_headers(headers, now=NOW)

    # THEN the published rate is the sustained 5 req/s (the one every policy allows); the windowless limit of 1
    # lowers `limit` but not the rate, since nothing says per what
    assert (info.published_per_sec, info.window_sec) == (5.0, 60.0)
    assert info.limit == 1


def test_most_conservative_reading_wins_when_sources_disagree():
    # GIVEN three sources disagreeing on the wait, two on the remaining count
    headers = [
        ("Retry-After", "3"),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset", "8"),
        ("RateLimit", '"burst";r=0;t=2, "daily";r=0;t=20'),
        ("RETRY-AFTER", "1"),
    ]

    # WHEN they are parsed (as name/value pairs, names in any case)
    info = parse_rate_limit_headers(headers, now=NOW)

    # THEN the longest wait and the lowest remaining win
    assert info.wait_sec == 20.0
    assert info.remaining == 0


def test_garbage_and_absent_headers_give_no_information():
    # GIVEN / WHEN / THEN
    garbage = {
        "Retry-After": "tomorrow-ish",
        "X-RateLimit-Remaining": "-1",
        "X-RateLimit-Reset": "9" * 5_000,
        "RateLimit": '";;,,=="',
        "RateLimit-Policy": "q=;w",
        "Content-Type": "application/json",
    }
    assert parse_rate_limit_headers(garbage, now=NOW) == RateLimitInfo()
    assert parse_rate_limit_headers({}, now=NOW) == RateLimitInfo()


# Headers as public APIs send them (429s unless noted), and what a caller should take from each.
PUBLIC_API_NOW = 1_764_000_000.0  # Mon, 24 Nov 2025 16:00:00 GMT
PUBLIC_API_EXAMPLES = {
    "github primary quota": (
        {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1764001800",
         "x-ratelimit-used": "5000", "x-ratelimit-resource": "core"},
        RateLimitInfo(wait_sec=1800.0, remaining=0, limit=5000)),
    "github secondary limit": ({"retry-after": "60"}, RateLimitInfo(wait_sec=60.0)),
    "github 200 with quota left": (
        {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999", "x-ratelimit-reset": "1764003600"},
        RateLimitInfo(wait_sec=None, remaining=4999, limit=5000)),
    "discord (reset as fractional epoch)": (
        {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1764000001.250",
         "X-RateLimit-Reset-After": "1.250", "Retry-After": "1"},
        RateLimitInfo(wait_sec=1.25, remaining=0, limit=5)),
    "x (twitter), hyphenated names": (
        {"x-rate-limit-limit": "900", "x-rate-limit-remaining": "0", "x-rate-limit-reset": "1764000600"},
        RateLimitInfo(wait_sec=600.0, remaining=0, limit=900)),
    "openai (its per-kind names are not read; Retry-After is)": (
        {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
         "x-ratelimit-reset-requests": "1s", "retry-after": "2"},
        RateLimitInfo(wait_sec=2.0)),
    "shopify (leaky bucket header is not read; Retry-After is)": (
        {"X-Shopify-Shop-Api-Call-Limit": "40/40", "Retry-After": "2.0"}, RateLimitInfo(wait_sec=2.0)),
    "ietf draft, separate fields": (
        {"RateLimit-Limit": "100", "RateLimit-Remaining": "0", "RateLimit-Reset": "30"},
        RateLimitInfo(wait_sec=30.0, remaining=0, limit=100)),
    "ietf structured fields": (
        {"RateLimit-Policy": '"default";q=100;w=60', "RateLimit": '"default";r=0;t=30'},
        RateLimitInfo(wait_sec=30.0, remaining=0, limit=100, published_per_sec=100 / 60, window_sec=60.0)),
    "retry-after as an http-date": ({"Retry-After": "Mon, 24 Nov 2025 16:00:30 GMT"}, RateLimitInfo(wait_sec=30.0)),
}


@pytest.mark.parametrize("api", list(PUBLIC_API_EXAMPLES))
def test_headers_of_public_apis(api):
    headers, expected = PUBLIC_API_EXAMPLES[api]
    assert parse_rate_limit_headers(headers, now=PUBLIC_API_NOW) == expected


# -- one header sent twice: two lines, or folded into one list by the transport or a proxy --------


@pytest.mark.parametrize(
    ("value", "wait_sec"),
    [
        ("120, 120", 120.0),
        ("5, 120", 120.0),
        ("120,5", 120.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT, Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT, 120", 120.0),
        ("3, Wednesday, 21-Oct-15 07:28:00 GMT", 10.0),
        ("Wed Oct 21 07:28:00 2015, 1", 10.0),
        ("120, soon", 120.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT, 0", 0.0),
    ],
)
def test_a_folded_retry_after_gives_the_longest_wait_of_its_members(value, wait_sec):
    # GIVEN a Retry-After holding several values / WHEN parsed / THEN the safest (longest) wait, dates kept whole
    assert parse_retry_after(value, NOW) == pytest.approx(wait_sec)


@pytest.mark.parametrize("value", ["soon, later", ",", "Wed,", "Wed, soon", ", , ,"])
def test_a_folded_retry_after_of_garbage_is_no_information(value):
    assert parse_retry_after(value, NOW) is None


def test_a_retry_after_on_two_lines_gives_the_longest_wait():
    # GIVEN the header twice, as (name, value) lines, disagreeing / WHEN parsed THEN the longer wait
    info = parse_rate_limit_headers([("Retry-After", "2"), ("retry-after", "120")], now=NOW)
    assert info.wait_sec == 120.0


@pytest.mark.parametrize(
    "headers",
    [
        [("X-RateLimit-Limit", "100"), ("X-RateLimit-Limit", "60"), ("X-RateLimit-Remaining", "5"),
         ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "12"), ("X-RateLimit-Reset", "30")],
        [("X-RateLimit-Limit", "100, 60"), ("X-RateLimit-Remaining", "5, 0"), ("X-RateLimit-Reset", "12, 30")],
    ],
    ids=["two-lines", "folded"],
)
def test_separate_rate_limit_fields_sent_twice_keep_the_safest_reading(headers):
    # THEN the lowest limit and remaining, and the longest wait
    assert parse_rate_limit_headers(headers, now=NOW) == RateLimitInfo(wait_sec=30.0, remaining=0, limit=60)


def test_a_folded_ratelimit_dictionary_keeps_each_reset_with_its_remaining():
    # GIVEN two draft-07 dictionaries folded into one line: one window still has room, the other is empty
    info = parse_rate_limit_headers({"RateLimit": "limit=10, remaining=5, reset=60, limit=10, remaining=0, reset=3"},
                                    now=NOW)
    # THEN the empty one's reset is the wait (the other's is only when its window refills)
    assert info == RateLimitInfo(wait_sec=3.0, remaining=0, limit=10)

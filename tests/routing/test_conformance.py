"""EventBridge pattern conformance: pattern, event, expected, written from the EventBridge user guide
(event patterns, content filtering, arrays, null and empty values, comparison operators) and the
event-ruler README. Every case runs through the reference `Pattern.matches` and the compiled
`Matcher`, which must both give the expected answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from inmotion import Event
from inmotion.errors import InvalidEvent, InvalidPattern
from inmotion.routing import Matcher, Pattern, event_document

EC2: dict[str, Any] = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {
        "instance-id": "i-1234567890abcdef0",
        "state": "terminated",
        "c-count": 5,
        "d-count": 3,
        "x-limit": 301.8,
        "source-ip": "10.0.0.33",
    },
}


def ec2(**detail: Any) -> dict[str, Any]:
    return {**EC2, "detail": {**EC2["detail"], **detail}}


EMPLOYEES = {
    "employees": [
        {"firstName": "John", "lastName": "Doe"},
        {"firstName": "Anna", "lastName": "Smith"},
        {"firstName": "Peter", "lastName": "Jones"},
    ]
}

# (case id, pattern, event, expected)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # --- exact values, AND across fields, OR within a leaf -------------------------------------
    ("exact-source", {"source": ["aws.ec2"]}, EC2, True),
    ("exact-source-other", {"source": ["aws.s3"]}, EC2, False),
    ("exact-is-case-sensitive", {"source": ["AWS.EC2"]}, EC2, False),
    ("exact-no-substring", {"source": ["aws"]}, EC2, False),
    ("or-within-leaf", {"source": ["aws.s3", "aws.ec2"]}, EC2, True),
    (
        "and-across-fields",
        {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
        EC2,
        True,
    ),
    ("and-one-field-fails", {"source": ["aws.ec2"], "detail-type": ["Other"]}, EC2, False),
    ("nested-exact", {"source": ["aws.ec2"], "detail": {"state": ["terminated"]}}, EC2, True),
    ("nested-exact-fails", {"detail": {"state": ["running"]}}, EC2, False),
    ("nested-or", {"detail": {"state": ["running", "terminated"]}}, EC2, True),
    ("missing-field-fails", {"detail": {"colour": ["red"]}}, EC2, False),
    ("pattern-object-vs-scalar", {"source": {"name": ["aws.ec2"]}}, EC2, False),
    ("pattern-leaf-vs-object", {"detail": ["terminated"]}, EC2, False),
    ("fields-not-in-pattern-ignored", {"region": ["us-west-1"]}, EC2, True),
    # --- numbers, booleans, null, empty string -----------------------------------------------
    ("exact-number", {"detail": {"c-count": [5]}}, EC2, True),
    ("exact-number-other", {"detail": {"c-count": [6]}}, EC2, False),
    ("exact-number-300-matches-300.0", {"price": [300]}, {"price": 300.0}, True),
    ("exact-number-300.0-matches-300", {"price": [300.0]}, {"price": 300}, True),
    ("exact-float", {"detail": {"x-limit": [301.8]}}, EC2, True),
    ("number-does-not-match-string", {"price": [300]}, {"price": "300"}, False),
    ("string-does-not-match-number", {"price": ["300"]}, {"price": 300}, False),
    ("true-matches-true", {"enabled": [True]}, {"enabled": True}, True),
    ("true-not-string-true", {"enabled": [True]}, {"enabled": "true"}, False),
    ("true-not-one", {"enabled": [True]}, {"enabled": 1}, False),
    ("one-not-true", {"count": [1]}, {"count": True}, False),
    ("false-not-zero", {"flag": [False]}, {"flag": 0}, False),
    ("false-matches-false", {"flag": [False]}, {"flag": False}, True),
    ("null-matches-null", {"UserID": [None]}, {"UserID": None}, True),
    ("null-not-missing", {"UserID": [None]}, {"Other": 1}, False),
    ("null-not-empty-string", {"UserID": [None]}, {"UserID": ""}, False),
    ("empty-string-matches-empty", {"LastName": [""]}, {"LastName": ""}, True),
    ("empty-string-not-null", {"LastName": [""]}, {"LastName": None}, False),
    ("empty-string-not-missing", {"LastName": [""]}, {"FirstName": "A"}, False),
    ("null-or-empty", {"LastName": ["", None]}, {"LastName": None}, True),
    ("doc-empty-string", {"detail": {"eventVersion": [""]}}, {"detail": {"eventVersion": "", "r": None}}, True),
    (
        "doc-null",
        {"detail": {"responseElements": [None]}},
        {"detail": {"eventVersion": "", "responseElements": None}},
        True,
    ),
    ("doc-null-not-empty", {"detail": {"eventVersion": [None]}}, {"detail": {"eventVersion": ""}}, False),
    # --- arrays in events ---------------------------------------------------------------------
    (
        "doc-resources-intersection",
        {"resources": ["arn:a:1", "arn:b:1", "arn:c:1"]},
        {"resources": ["arn:autoscaling:x", "arn:a:1"]},
        True,
    ),
    (
        "array-event-intersects",
        {"resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"]},
        EC2,
        True,
    ),
    ("array-any-element", {"tags": ["b"]}, {"tags": ["a", "b", "c"]}, True),
    ("array-no-element", {"tags": ["z"]}, {"tags": ["a", "b", "c"]}, False),
    ("array-empty", {"tags": ["a"]}, {"tags": []}, False),
    ("array-nested", {"tags": ["c"]}, {"tags": [["a"], ["b", ["c"]]]}, True),
    ("array-of-objects", {"employees": {"firstName": ["Anna"]}}, EMPLOYEES, True),
    (
        "array-of-objects-same-element",
        {"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}},
        EMPLOYEES,
        True,
    ),
    (
        "array-of-objects-never-combine",
        {"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}},
        EMPLOYEES,
        False,
    ),
    (
        "array-multi-level",
        {"employees": {"firstName": ["Peter"], "lastName": ["Jones"]}},
        {"employees": [[{"firstName": "John", "lastName": "Doe"}], [{"firstName": "Peter", "lastName": "Jones"}]]},
        True,
    ),
    (
        "array-multi-level-never-combine",
        {"employees": {"firstName": ["John"], "lastName": ["Jones"]}},
        {"employees": [[{"firstName": "John", "lastName": "Doe"}], [{"firstName": "Peter", "lastName": "Jones"}]]},
        False,
    ),
    (
        "array-nested-objects",
        {"orders": {"items": {"sku": ["B"], "qty": [2]}}},
        {"orders": [{"items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 2}]}]},
        True,
    ),
    (
        "array-nested-objects-never-combine",
        {"orders": {"items": {"sku": ["B"], "qty": [1]}}},
        {"orders": [{"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]}]},
        False,
    ),
    ("array-of-numbers-numeric", {"scores": [{"numeric": [">", 90]}]}, {"scores": [10, 95]}, True),
    # --- prefix ---------------------------------------------------------------------------
    ("prefix", {"time": [{"prefix": "2017-12-22"}]}, EC2, True),
    ("prefix-no", {"time": [{"prefix": "2017-10-02"}]}, EC2, False),
    ("prefix-region", {"source": ["aws.ec2"], "region": [{"prefix": "us-"}]}, EC2, True),
    ("prefix-case-sensitive", {"region": [{"prefix": "US-"}]}, EC2, False),
    ("prefix-strings-only", {"code": [{"prefix": "12"}]}, {"code": 123}, False),
    ("prefix-empty-matches-any-string", {"code": [{"prefix": ""}]}, {"code": "x"}, True),
    ("prefix-whole-value", {"region": [{"prefix": "us-west-1"}]}, EC2, True),
    ("prefix-longer-than-value", {"region": [{"prefix": "us-west-1a"}]}, EC2, False),
    (
        "prefix-ignore-case",
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        {"detail": {"service": "eventbridge"}},
        True,
    ),
    (
        "prefix-ignore-case-no",
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventX"}}]}},
        {"detail": {"service": "EVENTBRIDGE"}},
        False,
    ),
    # --- suffix ---------------------------------------------------------------------------
    ("suffix", {"FileName": [{"suffix": ".png"}]}, {"FileName": "image.png"}, True),
    ("suffix-no", {"FileName": [{"suffix": ".png"}]}, {"FileName": "image.jpg"}, False),
    ("suffix-case-sensitive", {"FileName": [{"suffix": ".png"}]}, {"FileName": "image.PNG"}, False),
    (
        "suffix-ignore-case",
        {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        {"detail": {"FileName": "IMAGE.PNG"}},
        True,
    ),
    (
        "suffix-ignore-case-no",
        {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        {"detail": {"FileName": "image.gif"}},
        False,
    ),
    ("suffix-strings-only", {"n": [{"suffix": "5"}]}, {"n": 5}, False),
    # --- equals-ignore-case ---------------------------------------------------------------
    ("equals-ignore-case", {"source": [{"equals-ignore-case": "AWS.EC2"}]}, EC2, True),
    ("equals-ignore-case-no-prefix", {"source": [{"equals-ignore-case": "AWS"}]}, EC2, False),
    ("equals-ignore-case-mixed", {"name": [{"equals-ignore-case": "alice"}]}, {"name": "ALiCe"}, True),
    ("equals-ignore-case-strings-only", {"v": [{"equals-ignore-case": "true"}]}, {"v": True}, False),
    # --- dotted keys: a field is named by its keys joined with dots (event-ruler README) --------
    (
        "dotted-key-in-pattern",
        {"detail": {"state.status": ["running"]}},
        {"detail": {"state": {"status": "running"}}},
        True,
    ),
    (
        "dotted-key-in-event",
        {"detail": {"state": {"status": ["running"]}}},
        {"detail": {"state.status": "running"}},
        True,
    ),
    ("dotted-key-in-both", {"detail.state.status": ["running"]}, {"detail": {"state.status": "running"}}, True),
    (
        "dotted-key-other-value",
        {"detail": {"state.status": ["running"]}},
        {"detail": {"state": {"status": "off"}}},
        False,
    ),
    ("dotted-key-not-a-substring", {"a": {"b": ["x"]}}, {"ab": "x"}, False),
    (
        "dotted-key-merged-with-nested",
        {"detail": {"state.status": ["running"], "state": {"code": [16]}}},
        {"detail": {"state": {"code": 16}, "state.status": "running"}},
        True,
    ),
    ("dotted-key-and-nested-both-values", {"a": {"b": ["x"]}}, {"a": {"b": "y"}, "a.b": "x"}, True),
    ("dotted-key-leaf-and-object", {"a": ["x"], "a.b": ["y"]}, {"a": "x", "a.b": "y"}, True),
    ("dotted-key-exists-false", {"a": {"b": [{"exists": False}]}}, {"a.b": 1}, False),
    ("dotted-key-array-elements-apart", {"a": {"b": ["x"], "c": ["z"]}}, {"a": [{"b": "x"}, {"c.d": 1}]}, False),
    (
        "dotted-key-beside-an-array-meets-each-element",
        {"a": {"b": ["y"], "c": ["z"]}},
        {"a": [{"b": "x"}, {"b": "y"}], "a.c": "z"},
        True,
    ),
    # --- wildcard -------------------------------------------------------------------------
    ("wildcard-middle", {"source": [{"wildcard": "Simple*Service"}]}, {"source": "SimpleQueueService"}, True),
    ("wildcard-empty-run", {"source": [{"wildcard": "Simple*Service"}]}, {"source": "SimpleService"}, True),
    ("wildcard-no", {"source": [{"wildcard": "Simple*Service"}]}, {"source": "SimpleQueue"}, False),
    ("wildcard-png-in-dir", {"FileName": [{"wildcard": "dir/*.png"}]}, {"FileName": "dir/a/b.png"}, True),
    ("wildcard-png-in-dir-no", {"FileName": [{"wildcard": "dir/*.png"}]}, {"FileName": "other/b.png"}, False),
    ("wildcard-multiple", {"t": [{"wildcard": "*Title*"}]}, {"t": "The Title Here"}, True),
    ("wildcard-star-alone", {"t": [{"wildcard": "*"}]}, {"t": ""}, True),
    ("wildcard-case-sensitive", {"t": [{"wildcard": "a*"}]}, {"t": "Abc"}, False),
    ("wildcard-escaped-star", {"t": [{"wildcard": "a\\*b"}]}, {"t": "a*b"}, True),
    ("wildcard-escaped-star-literal", {"t": [{"wildcard": "a\\*b"}]}, {"t": "axxb"}, False),
    ("wildcard-escaped-backslash", {"t": [{"wildcard": "a\\\\b"}]}, {"t": "a\\b"}, True),
    ("wildcard-no-regex", {"t": [{"wildcard": "a.c"}]}, {"t": "abc"}, False),
    ("wildcard-strings-only", {"t": [{"wildcard": "1*"}]}, {"t": 123}, False),
    ("wildcard-newline", {"t": [{"wildcard": "a*b"}]}, {"t": "a\nb"}, True),
    ("wildcard-run-found-later", {"t": [{"wildcard": "*ab*abc"}]}, {"t": "aababxabc"}, True),
    ("wildcard-prefix-and-suffix-overlap", {"t": [{"wildcard": "ab*ba"}]}, {"t": "aba"}, False),
    ("wildcard-suffix-after-middle", {"t": [{"wildcard": "*a*a"}]}, {"t": "a"}, False),
    ("wildcard-middle-not-in-suffix", {"t": [{"wildcard": "x*yz*z"}]}, {"t": "xyz"}, False),
    # --- anything-but -------------------------------------------------------------------
    ("anything-but-string", {"detail": {"state": [{"anything-but": "initializing"}]}}, EC2, True),
    ("anything-but-string-excluded", {"detail": {"state": [{"anything-but": "terminated"}]}}, EC2, False),
    ("anything-but-number", {"detail": {"x-limit": [{"anything-but": 123}]}}, EC2, True),
    ("anything-but-number-excluded", {"detail": {"c-count": [{"anything-but": 5}]}}, EC2, False),
    ("anything-but-number-300.0", {"n": [{"anything-but": 300}]}, {"n": 300.0}, False),
    ("anything-but-list", {"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}, EC2, True),
    ("anything-but-list-excluded", {"detail": {"state": [{"anything-but": ["stopped", "terminated"]}]}}, EC2, False),
    ("anything-but-numbers", {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}, EC2, True),
    ("anything-but-numbers-excluded", {"n": [{"anything-but": [100, 200, 300]}]}, {"n": 200}, False),
    ("anything-but-matches-null", {"state": [{"anything-but": "x"}]}, {"state": None}, True),
    ("anything-but-not-missing", {"state": [{"anything-but": "x"}]}, {"other": 1}, False),
    ("anything-but-string-vs-number", {"state": [{"anything-but": "5"}]}, {"state": 5}, True),
    ("anything-but-number-vs-string", {"n": [{"anything-but": 5}]}, {"n": "5"}, True),
    ("anything-but-array-any-element", {"s": [{"anything-but": "a"}]}, {"s": ["a", "b"]}, True),
    ("anything-but-array-all-excluded", {"s": [{"anything-but": ["a", "b"]}]}, {"s": ["a", "b"]}, False),
    ("anything-but-empty-array", {"s": [{"anything-but": "a"}]}, {"s": []}, False),
    ("anything-but-prefix", {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}, EC2, True),
    ("anything-but-prefix-excluded", {"state": [{"anything-but": {"prefix": "init"}}]}, {"state": "initial"}, False),
    ("anything-but-prefix-number", {"state": [{"anything-but": {"prefix": "1"}}]}, {"state": 12}, True),
    ("anything-but-prefix-list", {"r": [{"anything-but": {"prefix": ["us-", "eu-"]}}]}, {"r": "eu-west-1"}, False),
    ("anything-but-suffix", {"FileName": [{"anything-but": {"suffix": ".png"}}]}, {"FileName": "a.txt"}, True),
    (
        "anything-but-suffix-excluded",
        {"FileName": [{"anything-but": {"suffix": ".png"}}]},
        {"FileName": "a.png"},
        False,
    ),
    ("anything-but-ignore-case", {"state": [{"anything-but": {"equals-ignore-case": "init"}}]}, {"state": "run"}, True),
    (
        "anything-but-ignore-case-excluded",
        {"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]},
        {"state": "INITIALIZING"},
        False,
    ),
    (
        "anything-but-ignore-case-list",
        {"state": [{"anything-but": {"equals-ignore-case": ["stopped", "overloaded"]}}]},
        {"state": "Stopped"},
        False,
    ),
    (
        "anything-but-wildcard",
        {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]},
        {"FilePath": "/usr/bin/x"},
        True,
    ),
    (
        "anything-but-wildcard-excluded",
        {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]},
        {"FilePath": "/usr/lib/x"},
        False,
    ),
    (
        "anything-but-wildcard-list",
        {"FilePath": [{"anything-but": {"wildcard": ["*/lib/*", "*.tmp"]}}]},
        {"FilePath": "/home/a.tmp"},
        False,
    ),
    ("anything-but-or-value", {"s": [{"anything-but": "a"}, "a"]}, {"s": "a"}, True),
    # --- numeric ------------------------------------------------------------------------
    (
        "numeric-all-fields",
        {
            "detail": {
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
                "d-count": [{"numeric": ["<", 10]}],
                "x-limit": [{"numeric": ["=", 3.018e2]}],
            }
        },
        EC2,
        True,
    ),
    ("numeric-gt-fails", {"detail": {"c-count": [{"numeric": [">", 5]}]}}, EC2, False),
    ("numeric-ge", {"detail": {"c-count": [{"numeric": [">=", 5]}]}}, EC2, True),
    ("numeric-lt-fails", {"detail": {"c-count": [{"numeric": ["<", 5]}]}}, EC2, False),
    ("numeric-le", {"detail": {"c-count": [{"numeric": ["<=", 5]}]}}, EC2, True),
    ("numeric-eq-int-float", {"n": [{"numeric": ["=", 300]}]}, {"n": 300.0}, True),
    ("numeric-range-open-top", {"n": [{"numeric": [">", 10, "<", 20]}]}, {"n": 20}, False),
    ("numeric-range-closed-top", {"n": [{"numeric": [">", 10, "<=", 20]}]}, {"n": 20}, True),
    ("numeric-range-open-bottom", {"n": [{"numeric": [">", 10, "<=", 20]}]}, {"n": 10}, False),
    ("numeric-range-closed-bottom", {"n": [{"numeric": [">=", 10, "<=", 20]}]}, {"n": 10}, True),
    ("numeric-negative", {"n": [{"numeric": ["<", 0]}]}, {"n": -0.5}, True),
    ("numeric-string-never", {"n": [{"numeric": [">", 0]}]}, {"n": "5"}, False),
    ("numeric-boolean-never", {"n": [{"numeric": [">", 0]}]}, {"n": True}, False),
    ("numeric-null-never", {"n": [{"numeric": ["<", 1]}]}, {"n": None}, False),
    ("numeric-beyond-limit", {"n": [{"numeric": [">", 0]}]}, {"n": 6e9}, False),
    ("numeric-at-limit", {"n": [{"numeric": [">", 0]}]}, {"n": 5e9}, True),
    ("numeric-or-ranges", {"n": [{"numeric": ["<", 0]}, {"numeric": [">", 100]}]}, {"n": 150}, True),
    ("numeric-or-ranges-gap", {"n": [{"numeric": ["<", 0]}, {"numeric": [">", 100]}]}, {"n": 50}, False),
    # --- cidr ---------------------------------------------------------------------------
    ("cidr-v4", {"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}}, EC2, True),
    ("cidr-v4-outside", {"detail": {"source-ip": [{"cidr": "10.0.1.0/24"}]}}, EC2, False),
    ("cidr-v4-wide", {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "10.200.3.4"}, True),
    ("cidr-v4-host", {"ip": [{"cidr": "192.168.1.7/32"}]}, {"ip": "192.168.1.7"}, True),
    ("cidr-v6", {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8:0:1::5"}, True),
    ("cidr-v6-outside", {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db9::5"}, False),
    ("cidr-v6-vs-v4", {"ip": [{"cidr": "::/0"}]}, {"ip": "10.0.0.1"}, False),
    ("cidr-not-an-ip", {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "10.0.0"}, False),
    ("cidr-number-never", {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": 10}, False),
    # --- exists -------------------------------------------------------------------------
    ("exists-true", {"detail": {"c-count": [{"exists": True}]}}, EC2, True),
    ("exists-true-missing", {"detail": {"e-count": [{"exists": True}]}}, EC2, False),
    ("exists-false-missing", {"detail": {"e-count": [{"exists": False}]}}, EC2, True),
    ("exists-false-present", {"detail": {"c-count": [{"exists": False}]}}, EC2, False),
    ("exists-true-null", {"UserID": [{"exists": True}]}, {"UserID": None}, True),
    ("exists-false-null", {"UserID": [{"exists": False}]}, {"UserID": None}, False),
    ("exists-false-leaf-only", {"detail": {"c-count": [{"exists": False}]}}, ec2(**{"c-count": {"c1": 100}}), True),
    ("exists-true-leaf-only", {"detail": {"c-count": [{"exists": True}]}}, ec2(**{"c-count": {"c1": 100}}), False),
    ("exists-false-parent-missing", {"a": {"b": [{"exists": False}]}}, {"c": 1}, True),
    ("exists-true-empty-array", {"tags": [{"exists": True}]}, {"tags": []}, False),
    ("exists-false-empty-array", {"tags": [{"exists": False}]}, {"tags": []}, True),
    ("exists-true-array", {"employees": {"firstName": [{"exists": True}]}}, EMPLOYEES, True),
    ("exists-false-in-some-element", {"employees": {"middleName": [{"exists": False}]}}, EMPLOYEES, True),
    ("exists-false-any-element-has-it", {"employees": {"lastName": [{"exists": False}]}}, EMPLOYEES, False),
    # --- $or ------------------------------------------------------------------------------
    (
        "or-fields",
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "Paris", "Day": "Monday"},
        True,
    ),
    (
        "or-fields-none",
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "Paris", "Day": "Friday"},
        False,
    ),
    (
        "or-and-source",
        {
            "source": ["aws.cloudwatch"],
            "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]}, {"namespace": ["AWS/EC2", "AWS/ES"]}],
        },
        {"source": "aws.cloudwatch", "namespace": "AWS/ES"},
        True,
    ),
    (
        "or-and-source-fails",
        {
            "source": ["aws.cloudwatch"],
            "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]}, {"namespace": ["AWS/EC2", "AWS/ES"]}],
        },
        {"source": "aws.ec2", "namespace": "AWS/ES"},
        False,
    ),
    (
        "or-with-and-inside",
        {
            "source": ["aws.cloudwatch"],
            "$or": [
                {"metricName": ["CPUUtilization"]},
                {"metricType": ["MetricType"], "namespace": ["AWS/EC2"]},
                {"scope": ["Service"]},
            ],
        },
        {"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2"},
        True,
    ),
    (
        "or-with-and-inside-partial",
        {
            "source": ["aws.cloudwatch"],
            "$or": [{"metricName": ["CPUUtilization"]}, {"metricType": ["MetricType"], "namespace": ["AWS/EC2"]}],
        },
        {"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/ES"},
        False,
    ),
    (
        "or-nested",
        {
            "source": ["aws.cloudwatch"],
            "$or": [
                {"metricName": ["CPUUtilization"]},
                {"namespace": ["AWS/EC2"], "$or": [{"metricId": [1234]}, {"spaceId": [1000]}]},
            ],
        },
        {"source": "aws.cloudwatch", "namespace": "AWS/EC2", "spaceId": 1000},
        True,
    ),
    (
        "or-parallel",
        {
            "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
            "detail": {"$or": [{"source": ["aws.cloudwatch"]}, {"detail-type": ["Alarm"]}]},
        },
        {"namespace": "AWS/EC2", "detail": {"detail-type": "Alarm"}},
        True,
    ),
    (
        "or-parallel-second-fails",
        {
            "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
            "detail": {"$or": [{"source": ["aws.cloudwatch"]}, {"detail-type": ["Alarm"]}]},
        },
        {"namespace": "AWS/EC2", "detail": {"detail-type": "Other"}},
        False,
    ),
    (
        "or-numeric",
        {"detail": {"$or": [{"c-count": [{"numeric": [">", 10]}]}, {"d-count": [{"numeric": ["<", 5]}]}]}},
        EC2,
        True,
    ),
    (
        "or-inside-array-element",
        {"employees": {"$or": [{"firstName": ["Anna"]}, {"firstName": ["Bob"]}], "lastName": ["Smith"]}},
        EMPLOYEES,
        True,
    ),
    (
        "or-inside-array-never-combine",
        {"employees": {"$or": [{"firstName": ["Anna"]}, {"firstName": ["Bob"]}], "lastName": ["Doe"]}},
        EMPLOYEES,
        False,
    ),
    # --- the complex example -----------------------------------------------------------------
    (
        "complex",
        {
            "time": [{"prefix": "2017-12-22"}],
            "detail": {
                "state": [{"anything-but": "initializing"}],
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
                "d-count": [{"numeric": ["<", 10]}],
                "x-limit": [{"anything-but": [100, 200, 300]}],
                "source-ip": [{"cidr": "10.0.0.0/8"}],
            },
        },
        EC2,
        True,
    ),
    (
        "complex-one-fails",
        {
            "time": [{"prefix": "2017-12-22"}],
            "detail": {"state": [{"anything-but": "terminated"}], "c-count": [{"numeric": [">", 0, "<=", 5]}]},
        },
        EC2,
        False,
    ),
]


@pytest.mark.parametrize(("pattern", "event", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_conformance(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert Pattern(pattern).matches(event) is expected
    assert Matcher({"rule": pattern}).match(event) == (["rule"] if expected else [])


def test_the_table_is_large_and_balanced() -> None:
    assert len(CASES) >= 100
    assert len({c[0] for c in CASES}) == len(CASES)
    outcomes = [c[3] for c in CASES]
    assert outcomes.count(True) > 40
    assert outcomes.count(False) > 40


def test_all_cases_in_one_matcher() -> None:
    """The whole table compiled into one structure gives each event exactly its rules."""
    matcher = Matcher({name: pattern for name, pattern, _, _ in CASES})
    for name, _, event, _ in CASES:
        expected = [other for other, p, _, _ in CASES if Pattern(p).matches(event)]
        assert matcher.match(event) == expected, name


# (case id, pattern, path in the error, words in the problem)
INVALID: list[tuple[str, Any, str, str]] = [
    ("not-an-object", ["source"], "", "JSON object"),
    ("malformed-json", '{"source": [', "", "malformed JSON"),
    ("duplicate-key-in-json", '{"a": ["x"], "a": ["y"]}', "", "appears twice"),
    ("nan-in-json", '{"a": [NaN]}', "", "not a JSON number"),
    ("empty-pattern", {}, "", "empty objects"),
    ("empty-nested-object", {"detail": {}}, "detail", "empty objects"),
    ("scalar-leaf", {"source": "aws.ec2"}, "source", "object or a non-empty array"),
    ("number-leaf", {"n": 5}, "n", "object or a non-empty array"),
    ("empty-leaf", {"source": []}, "source", "empty arrays"),
    ("nested-array-in-leaf", {"source": [["a"]]}, "source[0]", "got an array"),
    ("two-operators", {"a": [{"prefix": "x", "suffix": "y"}]}, "a[0]", "exactly one operator"),
    ("empty-condition", {"a": [{}]}, "a[0]", "exactly one operator"),
    ("unknown-operator", {"a": [{"contains": "x"}]}, "a[0].contains", "unknown operator"),
    ("prefix-number", {"a": [{"prefix": 5}]}, "a[0].prefix", "takes a string"),
    ("prefix-bad-inner", {"a": [{"prefix": {"wildcard": "x"}}]}, "a[0].prefix", "equals-ignore-case"),
    ("suffix-null", {"a": [{"suffix": None}]}, "a[0].suffix", "takes a string"),
    ("equals-ignore-case-list", {"a": [{"equals-ignore-case": ["x"]}]}, "a[0].equals-ignore-case", "string"),
    ("wildcard-double-star", {"a": [{"wildcard": "a**b"}]}, "a[0].wildcard", "consecutive wildcard"),
    ("wildcard-bad-escape", {"a": [{"wildcard": "a\\b"}]}, "a[0].wildcard", "backslash"),
    ("wildcard-trailing-backslash", {"a": [{"wildcard": "a\\"}]}, "a[0].wildcard", "backslash"),
    ("wildcard-number", {"a": [{"wildcard": 1}]}, "a[0].wildcard", "takes a string"),
    ("wildcard-six-stars", {"a": [{"wildcard": "*a*a*a*a*a*b"}]}, "a[0].wildcard", "too complex: at most 5"),
    (
        "wildcard-field-too-complex",
        {"a": [{"wildcard": "*x*y*"}, {"wildcard": "*y*z*"}, {"anything-but": {"wildcard": ["*u*v*w*", "w*"]}}]},
        "a",
        "at most 10 wildcard characters over one field's wildcards, got 11",
    ),
    (
        "wildcard-field-too-complex-across-or",
        {
            "$or": [
                {"a": [{"wildcard": "*x*y*z*w*"}]},
                {"a": [{"wildcard": "*y*z*w*v*"}]},
                {"a": [{"wildcard": "*q*"}], "b": ["x"]},
            ]
        },
        "a",
        "got 12",
    ),
    ("anything-but-null", {"a": [{"anything-but": None}]}, "a[0].anything-but", "strings or numbers"),
    ("anything-but-bool", {"a": [{"anything-but": True}]}, "a[0].anything-but", "strings or numbers"),
    ("anything-but-mixed", {"a": [{"anything-but": ["x", 1]}]}, "a[0].anything-but", "not both"),
    ("anything-but-empty-list", {"a": [{"anything-but": []}]}, "a[0].anything-but", "non-empty"),
    ("anything-but-null-in-list", {"a": [{"anything-but": ["x", None]}]}, "a[0].anything-but[1]", "strings or"),
    ("anything-but-empty-prefix", {"a": [{"anything-but": {"prefix": ""}}]}, "a[0].anything-but.prefix", "empty"),
    ("anything-but-empty-suffix", {"a": [{"anything-but": {"suffix": ""}}]}, "a[0].anything-but.suffix", "empty"),
    ("anything-but-numeric", {"a": [{"anything-but": {"numeric": [">", 1]}}]}, "a[0].anything-but", "not 'numeric'"),
    ("anything-but-two-ops", {"a": [{"anything-but": {"prefix": "a", "suffix": "b"}}]}, "a[0].anything-but", "one"),
    (
        "anything-but-wildcard-bad",
        {"a": [{"anything-but": {"wildcard": "**"}}]},
        "a[0].anything-but.wildcard",
        "consec",
    ),
    ("anything-but-too-big", {"a": [{"anything-but": 6e9}]}, "a[0].anything-but", "between -5e9 and 5e9"),
    ("numeric-not-array", {"a": [{"numeric": 5}]}, "a[0].numeric", "takes an array"),
    ("numeric-empty", {"a": [{"numeric": []}]}, "a[0].numeric", "takes an array"),
    ("numeric-unknown-op", {"a": [{"numeric": ["!=", 5]}]}, "a[0].numeric", "unknown numeric operator"),
    ("numeric-string-value", {"a": [{"numeric": [">", "5"]}]}, "a[0].numeric", "takes numbers"),
    ("numeric-bool-value", {"a": [{"numeric": [">", True]}]}, "a[0].numeric", "takes numbers"),
    ("numeric-three-elements", {"a": [{"numeric": [">", 1, "<"]}]}, "a[0].numeric", "one or two comparisons"),
    ("numeric-eq-with-more", {"a": [{"numeric": ["=", 1, "<", 5]}]}, "a[0].numeric", "stands alone"),
    ("numeric-upper-first", {"a": [{"numeric": ["<", 5, ">", 1]}]}, "a[0].numeric", "lower bound first"),
    ("numeric-two-lower", {"a": [{"numeric": [">", 1, ">", 5]}]}, "a[0].numeric", '"<" or "<="'),
    ("numeric-empty-range", {"a": [{"numeric": [">", 5, "<", 5]}]}, "a[0].numeric", "less than the upper"),
    ("numeric-inverted-range", {"a": [{"numeric": [">=", 9, "<=", 1]}]}, "a[0].numeric", "less than the upper"),
    ("numeric-too-large", {"a": [{"numeric": [">", 5.1e9]}]}, "a[0].numeric", "between -5e9 and 5e9"),
    ("cidr-no-slash", {"a": [{"cidr": "10.0.0.1"}]}, "a[0].cidr", "ADDRESS/PREFIX-LENGTH"),
    ("cidr-bad-address", {"a": [{"cidr": "10.0.0.300/24"}]}, "a[0].cidr", "not a CIDR block"),
    ("cidr-bad-length", {"a": [{"cidr": "10.0.0.0/33"}]}, "a[0].cidr", "not a CIDR block"),
    ("cidr-number", {"a": [{"cidr": 10}]}, "a[0].cidr", "takes a string"),
    ("exists-string", {"a": [{"exists": "true"}]}, "a[0].exists", "true or false"),
    ("exists-null", {"a": [{"exists": None}]}, "a[0].exists", "true or false"),
    ("or-not-array", {"$or": {"a": ["x"]}}, "$or", "array of objects"),
    ("or-one-object", {"$or": [{"a": ["x"]}]}, "$or", "at least 2"),
    ("or-not-objects", {"$or": [{"a": ["x"]}, "b"]}, "$or[1]", "only objects"),
    ("or-empty-object", {"$or": [{"a": ["x"]}, {}]}, "$or[1]", "empty objects"),
    ("or-operator-as-field", {"$or": [{"numeric": [1]}, {"prefix": ["abc"]}]}, "numeric", "operator"),
    ("dotted-key-twice", {"a.b": ["x"], "a": {"b": ["y"]}}, "a.b", "appears twice"),
    ("dotted-key-twice-in-or", {"a.b": ["x"], "$or": [{"a": {"b": ["y"]}}, {"c": ["z"]}]}, "a.b", "only once"),
    ("or-duplicate-path", {"a": ["x"], "$or": [{"a": ["y"]}, {"b": ["z"]}]}, "a", "only once"),
    ("not-json-value", {"a": [object()]}, "a[0]", "not JSON"),
]


@pytest.mark.parametrize(("pattern", "path", "words"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_patterns(pattern: Any, path: str, words: str) -> None:
    with pytest.raises(InvalidPattern) as caught:
        Pattern(pattern)
    assert caught.value.path == path
    assert words in caught.value.problem
    with pytest.raises(InvalidPattern):
        Matcher().add("rule", pattern)


@pytest.mark.timeout(5)
def test_wildcards_match_in_linear_time() -> None:
    """Five stars against 100,000 characters: a backtracking regex never finishes."""
    pattern = {"a": [{"wildcard": "*a*a*a*a*b"}], "b": [{"anything-but": {"wildcard": "*a*a*a*a*b"}}]}
    event = {"a": "a" * 100_000, "b": "a" * 100_000}
    assert not Pattern(pattern).matches(event)
    assert Matcher({"r": pattern}).match(event) == []
    assert Matcher({"r": {"a": [{"wildcard": "*a*a*a*a*b"}]}}).match({"a": "a" * 100_000 + "b"}) == ["r"]


def nested(depth: int, leaf: Any, key: str = "a") -> Any:
    """`{key: {key: ... leaf}}` with `depth` objects, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


def test_patterns_nest_at_most_100_objects() -> None:
    assert Pattern(nested(100, ["x"])).matches(nested(100, "x"))
    for too_deep in (nested(101, ["x"]), nested(10_000, ["x"])):
        with pytest.raises(InvalidPattern, match="nested too deeply: patterns nest at most 100 objects deep"):
            Pattern(too_deep)
    alternatives: dict[str, Any] = {"a": ["x"]}
    for _ in range(150):
        alternatives = {"$or": [alternatives, {"b": ["y"]}]}
    with pytest.raises(InvalidPattern, match="nested too deeply"):
        Pattern(alternatives)


def test_pattern_text_nested_beyond_the_json_parser() -> None:
    with pytest.raises(InvalidPattern) as caught:
        Pattern('{"a":' * 10_000 + '["x"]' + "}" * 10_000)
    assert caught.value.path == ""
    assert "nested too deeply" in caught.value.problem


def test_deeply_nested_arrays_in_an_event_are_flattened() -> None:
    deep: Any = "x"
    for _ in range(10_000):
        deep = [deep]
    assert Pattern({"a": ["x"]}).matches({"a": deep})
    assert Matcher({"r": {"a": ["x"]}}).match({"a": deep}) == ["r"]
    assert Matcher({"r": {"a": {"b": ["x"]}}}).match({"a": [{"b": deep}, {"c": 1}]}) == ["r"]


def test_an_event_nested_too_deeply_to_merge_is_invalid() -> None:
    event = {"a": nested(5_000, "x"), "a.a": nested(5_000, "y")}
    with pytest.raises(InvalidEvent, match="nested too deeply"):
        Pattern({"a": {"a": ["x"]}}).matches(event)
    with pytest.raises(InvalidEvent, match="nested too deeply"):
        Matcher({"r": {"a": {"a": ["x"]}}}).match(event)


def test_json_text_and_dict_agree() -> None:
    text = '{"detail": {"state": [{"anything-but": "initializing"}], "c-count": [{"numeric": [">", 0]}]}}'
    assert Pattern(text) == Pattern(
        {"detail": {"state": [{"anything-but": "initializing"}], "c-count": [{"numeric": [">", 0]}]}}
    )
    assert Pattern(text).matches(EC2)
    assert Pattern(text.encode()).matches(EC2)


def test_an_event_is_matched_as_its_cloudevents_json() -> None:
    event = Event.create(
        "com.acme.order.created", {"amount": 120, "customer": {"tier": "gold"}}, source="/shop", key="o-1"
    )
    document = event_document(event)
    assert document["type"] == "com.acme.order.created"
    assert document["data"] == {"amount": 120, "customer": {"tier": "gold"}}
    assert document["partitionkey"] == "o-1"
    pattern = Pattern(
        {
            "type": [{"prefix": "com.acme.order."}],
            "source": ["/shop"],
            "partitionkey": ["o-1"],
            "data": {"amount": [{"numeric": [">=", 100]}], "customer": {"tier": ["gold"]}},
        }
    )
    assert pattern.matches(event)
    assert Matcher({"r": pattern}).match(event) == ["r"]
    assert not Pattern({"data": {"amount": [{"numeric": ["<", 100]}]}}).matches(event)


def test_nan_and_infinity_in_an_event_are_not_numbers_in_range() -> None:
    pattern = {"n": [{"numeric": [">", 0]}]}
    for value in (float("nan"), float("inf"), float("-inf")):
        assert not Pattern(pattern).matches({"n": value})
        assert Matcher({"r": pattern}).match({"n": value}) == []


def test_a_document_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(InvalidEvent):
        Pattern({"a": ["x"]}).matches(["a"])  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent):
        Matcher({"r": {"a": ["x"]}}).match("a")  # type: ignore[arg-type]


def test_explain_names_each_field() -> None:
    pattern = Pattern({"source": ["aws.ec2"], "detail": {"state": ["running"]}})
    lines = pattern.explain(EC2)
    assert lines == [
        'ok   source: "aws.ec2" against ["aws.ec2"]',
        'FAIL detail.state: "terminated" against ["running"]',
    ]


def test_matcher_names_follow_insertion_order_and_reject_duplicates() -> None:
    matcher = Matcher()
    matcher.add("z", {"source": ["aws.ec2"]})
    matcher.add("a", {"source": [{"prefix": "aws."}]})
    assert matcher.match(EC2) == ["z", "a"]
    from inmotion.errors import InvalidConfig

    with pytest.raises(InvalidConfig):
        matcher.add("a", {"source": ["x"]})
    with pytest.raises(KeyError):
        matcher.remove("nope")


def test_field_names_with_quotes_backslashes_and_unicode() -> None:
    names = ["it's", 'say "hi"', "back\\slash", "new\nline", "ünïcødé", "", "$or-like", "0"]
    for name in names:
        pattern = {name: {name: ["x"]}}
        assert Matcher({"r": pattern}).match({name: {name: "x"}}) == ["r"]
        assert Matcher({"r": pattern}).match({name: {name: "y"}}) == []
        assert Pattern(pattern).matches({name: {name: "x"}})

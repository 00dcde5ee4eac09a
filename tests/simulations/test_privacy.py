from simulations.policies import POLICIES


def test_meshagent_policies_never_violate_privacy(quick):
    for workload, row in quick.table.items():
        for spec in POLICIES:
            if spec.kind in ("forage", "local", "oracle"):
                assert row[spec.name].privacy_violations == 0, (workload, spec.name)


def test_cloud_only_violations_are_counted(quick):
    # software-dev reads a private code base, podcast starts from private notes,
    # survey's reduce mixes in an unpublished (lan) draft: all leave home under cloud-only.
    for workload, row in quick.table.items():
        assert row["cloud-only"].privacy_violations > 0, workload
    # software-dev: every private step (about four in five) goes to the cloud.
    sw = quick.table["software-dev"]["cloud-only"]
    assert sw.privacy_violations >= 0.6 * sw.steps


def test_nearest_peer_is_privacy_unaware(quick):
    assert quick.table["software-dev"]["nearest-peer"].privacy_violations > 0

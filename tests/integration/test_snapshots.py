"""The snapshot store actor: keeps the last R epochs, owns the objects, outlives their senders."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.integration


def test_store_keeps_last_r_and_outlives_the_sender(ray_cluster):
    import ray

    from jumpray.train.snapshots import create_snapshot_store, get_snapshot_store, store_name

    store = create_snapshot_store("unit-run", keep=2)
    assert get_snapshot_store("unit-run")._actor_id == store._actor_id

    @ray.remote(num_cpus=0)
    class Sender:  # stands in for a training worker
        def send(self, store, epoch: int) -> list[int]:
            return ray.get(store.put.remote(epoch, {"w": torch.full((2,), float(epoch))}))

    sender = Sender.remote()
    assert ray.get(sender.send.remote(store, 0)) == [0]
    assert ray.get(sender.send.remote(store, 1)) == [0, 1]
    assert ray.get(sender.send.remote(store, 2)) == [1, 2]  # R = 2: epoch 0 released
    assert ray.get(sender.send.remote(store, 2)) == [1, 2]  # same epoch again: replaced
    ray.kill(sender)  # the process that sent the weights is gone
    listed = ray.get(store.list.remote())
    assert [e for e, _ in listed] == [1, 2]
    assert [ray.get(ref)["w"].tolist() for _, ref in listed] == [[1.0, 1.0], [2.0, 2.0]]
    assert ray.get(store.get.remote(2))["w"].tolist() == [2.0, 2.0]
    with pytest.raises(ray.exceptions.RayTaskError, match="kept: \\[1, 2\\]"):
        ray.get(store.get.remote(0))
    ray.kill(store)
    with pytest.raises(ValueError, match="no snapshot store for run 'gone'"):
        get_snapshot_store("gone")
    assert store_name("x") == "jumpray-snapshots-x"

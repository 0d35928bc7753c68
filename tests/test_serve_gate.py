"""The service's Gate: it bounds running and waiting work, and answers Busy to the rest or after its timeout."""

import threading

import anyio
import pytest

from anybind.serve.app import Busy, Gate


def test_gate_bounds_running_and_waiting_work():
    release = threading.Event()
    started = []

    def job(i):
        started.append(i)
        release.wait(10)
        return i

    async def main():
        gate = Gate(concurrency=1, max_queue=1, timeout=5)
        results, errors = [], []

        async def call(i):
            try:
                results.append(await gate.run(job, i))
            except Busy as e:
                errors.append(str(e))

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(call, i)
                await anyio.sleep(0.05)
            assert (gate.running, gate.waiting) == (1, 1) and len(errors) == 1 and "busy" in errors[0]
            release.set()
        assert sorted(results) == [0, 1] and (gate.running, gate.waiting) == (0, 0)
        # a request that waits longer than the timeout gets 503 too
        gate2 = Gate(concurrency=1, max_queue=5, timeout=0.2)
        release.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(gate2.run, job, 10)  # holds the only slot until released
            await anyio.sleep(0.05)
            with pytest.raises(Busy, match="within 0.2 s"):
                await gate2.run(job, 11)
            release.set()

    anyio.run(main)

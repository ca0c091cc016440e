"""Micro-batching: images from concurrent requests captioned together in one model call.

Each image of a request becomes a queue item with its own future. One worker coroutine takes the first
waiting item, then gathers more for up to ``batch_wait_ms`` or until ``max_batch_size`` items, runs one
batched ``caption_fn`` call in a worker thread (the event loop keeps accepting requests meanwhile) and
resolves the futures. While a batch runs, new items queue up and form the next batch. Items whose request
has already given up (timeout, client gone) are dropped before the model sees them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from distilvit.serving.limits import APIError

logger = logging.getLogger("distilvit.serving")


@dataclass
class _Item:
    image: object
    future: asyncio.Future
    settled: bool = False  # taken by the worker, or withdrawn by its request: no longer counts as waiting


class MicroBatcher:
    """Queue + one worker; :meth:`start` and :meth:`stop` must run in the serving event loop."""

    def __init__(self, caption_fn: Callable[[list], list[str]], *, max_batch_size: int, batch_wait_ms: float,
                 max_queue: int):
        self.caption_fn = caption_fn
        self.max_batch_size = max_batch_size
        self.wait_s = batch_wait_ms / 1000.0
        self.max_queue = max_queue
        self.batch_sizes: Counter[int] = Counter()  # batch size -> how many batches ran with it
        self.waiting = 0  # queued images whose request still wants them
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distilvit-caption")
        self._worker = asyncio.create_task(self._run(), name="distilvit-micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def caption(self, images: Sequence) -> list[tuple[str, int]]:
        """``(caption, size of the batch it ran in)`` for each image, in order.

        Raises :class:`APIError` 503 when the queue cannot take ``len(images)`` more images. Cancelling the
        call (e.g. a timeout around it) withdraws this request's images that have not run yet.
        """
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if self.waiting + len(images) > self.max_queue:
            raise APIError(
                503, "overloaded",
                f"the server has {self.waiting} images waiting (limit --max-queue {self.max_queue}); "
                "retry in a moment.",
            )
        loop = asyncio.get_running_loop()
        items = [_Item(image, loop.create_future()) for image in images]
        for item in items:
            self._queue.put_nowait(item)
        self.waiting += len(items)
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        finally:
            for item in items:  # on timeout or disconnect: withdraw what has not run (the worker skips it)
                self._settle(item)
                item.future.cancel()

    def _settle(self, item: _Item) -> bool:
        """Mark ``item`` as no longer waiting; False when it already was (taken or withdrawn)."""
        if item.settled:
            return False
        item.settled = True
        self.waiting -= 1
        return True

    def stats(self) -> dict:
        batches = sum(self.batch_sizes.values())
        images = sum(size * count for size, count in self.batch_sizes.items())
        return {
            "batches": batches,
            "images": images,
            "mean_batch_size": round(images / batches, 3) if batches else None,
            "waiting": self.waiting,
        }

    async def _next_batch(self) -> list[_Item]:
        """Block for the first item, then gather more until the wait ends or the batch is full."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    batch.append(self._queue.get_nowait())
                else:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            live = [item for item in await self._next_batch() if self._settle(item)]
            if not live:
                continue
            try:
                captions = await loop.run_in_executor(self._executor, self.caption_fn, [i.image for i in live])
                if len(captions) != len(live):
                    raise RuntimeError(f"the backend returned {len(captions)} captions for {len(live)} images")
            except Exception as err:  # a model failure fails this batch's requests (500), not the server
                logger.exception("captioning a batch of %d images failed", len(live))
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            self.batch_sizes[len(live)] += 1
            for item, caption in zip(live, captions):
                if not item.future.done():
                    item.future.set_result((caption, len(live)))

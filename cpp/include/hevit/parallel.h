// Copyright (c) hevit developers. MIT license.
#pragma once

#include <cstddef>
#include <functional>

namespace hevit
{
    /** Most worker threads one call may ask for (a request above it is refused, not clamped). */
    constexpr int max_threads = 256;

    /**
    Calls body(i) for every i in [0, count) on up to threads worker threads (threads <= 0 means
    the hardware concurrency). Work is handed out one index at a time, so uneven items balance.
    The first exception thrown by any body is rethrown on the calling thread after all workers stop.

    @throws ResourceError if threads > max_threads, or if the system refuses to start a worker
    thread (the workers already started are stopped and joined first).
    */
    void parallel_for(std::size_t count, int threads, const std::function<void(std::size_t)> &body);

    /** The thread count parallel_for uses for a requested value (resolves threads <= 0). */
    int resolve_threads(int threads) noexcept;
} // namespace hevit

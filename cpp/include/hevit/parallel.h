// Copyright (c) hevit developers. MIT license.
#pragma once

#include <cstddef>
#include <functional>

namespace hevit
{
    /**
    Calls body(i) for every i in [0, count) on up to threads worker threads (threads <= 0 means
    the hardware concurrency). Work is handed out one index at a time, so uneven items balance.
    The first exception thrown by any body is rethrown on the calling thread after all workers stop.
    */
    void parallel_for(std::size_t count, int threads, const std::function<void(std::size_t)> &body);

    /** The thread count parallel_for uses for a requested value (resolves threads <= 0). */
    int resolve_threads(int threads) noexcept;
} // namespace hevit

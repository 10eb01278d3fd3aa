// Copyright (c) hevit developers. MIT license.
#include "hevit/parallel.h"
#include "hevit/errors.h"
#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace hevit
{
    int resolve_threads(int threads) noexcept
    {
        if (threads > 0)
        {
            return threads;
        }
        const unsigned hw = std::thread::hardware_concurrency();
        return hw == 0 ? 1 : static_cast<int>(hw);
    }

    void parallel_for(std::size_t count, int threads, const std::function<void(std::size_t)> &body)
    {
        if (threads > max_threads)
        {
            throw ResourceError(
                "threads=" + std::to_string(threads) + " is above the limit of " + std::to_string(max_threads));
        }
        const std::size_t workers = std::min<std::size_t>(count, static_cast<std::size_t>(resolve_threads(threads)));
        if (workers <= 1)
        {
            for (std::size_t i = 0; i < count; i++)
            {
                body(i);
            }
            return;
        }
        std::atomic<std::size_t> next{ 0 };
        std::atomic<bool> failed{ false };
        std::exception_ptr error;
        std::mutex error_mutex;
        auto run = [&]() {
            for (std::size_t i = next.fetch_add(1); i < count && !failed.load(); i = next.fetch_add(1))
            {
                try
                {
                    body(i);
                }
                catch (...)
                {
                    std::lock_guard<std::mutex> lock(error_mutex);
                    if (!error)
                    {
                        error = std::current_exception();
                    }
                    failed = true;
                }
            }
        };
        std::vector<std::thread> pool;
        pool.reserve(workers - 1);
        for (std::size_t t = 1; t < workers; t++)
        {
            try
            {
                pool.emplace_back(run);
            }
            catch (const std::system_error &e)
            {
                // stop the started workers before reporting: a thrown exception must not leave
                // joinable threads behind (std::terminate)
                failed = true;
                for (auto &thread : pool)
                {
                    thread.join();
                }
                throw ResourceError(
                    "could not start worker thread " + std::to_string(t) + " of " + std::to_string(workers) + ": " +
                    e.what());
            }
        }
        run();
        for (auto &thread : pool)
        {
            thread.join();
        }
        if (error)
        {
            std::rethrow_exception(error);
        }
    }
} // namespace hevit

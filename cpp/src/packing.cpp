// Copyright (c) hevit developers. MIT license.
#include "hevit/packing.h"
#include "hevit/errors.h"

namespace hevit
{
    const char *layout_name(Layout layout) noexcept
    {
        return layout == Layout::batch ? "batch" : "sample";
    }

    Layout parse_layout(const std::string &name)
    {
        if (name == "batch")
        {
            return Layout::batch;
        }
        if (name == "sample")
        {
            return Layout::sample;
        }
        throw LayoutError("unknown layout '" + name + "': use 'batch' (throughput) or 'sample' (latency)");
    }

    std::size_t next_pow2(std::size_t value) noexcept
    {
        std::size_t p = 1;
        while (p < value)
        {
            p <<= 1;
        }
        return p;
    }

    std::size_t batch_groups(std::size_t rows, std::size_t n) noexcept
    {
        return (rows + n - 1) / n;
    }

    std::size_t ciphertext_count(Layout layout, std::size_t rows, std::size_t cols, std::size_t n) noexcept
    {
        if (layout == Layout::batch)
        {
            return batch_groups(rows, n) * cols;
        }
        return (rows + 1) / 2;
    }
} // namespace hevit

// Copyright (c) hevit developers. MIT license.
#pragma once
// Private to the linear plan's sources: the shape of the sample-layout kernel.

#include <cstddef>

namespace hevit::detail
{
    /** Sample-layout shape of an out_dim x in_dim layer: slot period, padded output count and the
    baby-step / giant-step split of the hybrid diagonal method. */
    struct SampleShape
    {
        std::size_t padded_out;
        std::size_t period;
        std::size_t baby;
        std::size_t giant;
    };

    /**
    The shape for a layer in `slots` complex slots: as few baby steps as fit the key-switch budget
    ceil(log2 in_dim) + out_dim - 1, or the fewest key switches overall when asked (or when
    nothing fits the budget).

    @throws LayoutError if the layer needs more slots than there are
    */
    SampleShape sample_shape(std::size_t slots, std::size_t in_dim, std::size_t out_dim, bool fewest_key_switches);
} // namespace hevit::detail

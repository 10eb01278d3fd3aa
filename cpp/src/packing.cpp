// Copyright (c) hevit developers. MIT license.
#include "hevit/packing.h"
#include "hevit/encrypted_batch.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "seal/util/ntt.h"
#include <cmath>
#include "hevit/errors.h"

namespace hevit
{
    const char *layout_name(Layout layout) noexcept
    {
        switch (layout)
        {
        case Layout::batch:
            return "batch";
        case Layout::sample:
            return "sample";
        case Layout::coefficient:
            return "coefficient";
        }
        return "unknown";
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
        if (name == "coefficient")
        {
            return Layout::coefficient;
        }
        throw LayoutError(
            "unknown layout '" + name + "': use 'batch' (throughput), 'sample' or 'coefficient' (latency)");
    }

    std::size_t next_pow2(std::size_t value) noexcept
    {
        constexpr std::size_t largest = ~(~std::size_t(0) >> 1); // 2^63 on 64-bit
        if (value > largest)
        {
            return 0; // no power of two fits: callers bound value first (0 never passes their checks)
        }
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
        return layout == Layout::coefficient ? rows : (rows + 1) / 2;
    }

    namespace detail
    {
        void encode_plain(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t period, std::size_t index, seal::Plaintext &destination)
        {
            if (layout != Layout::coefficient)
            {
                std::vector<std::complex<double>> slots;
                pack_slots(context, values, rows, cols, layout, period, index, slots);
                context.encoder().encode(slots, context.data_parms_id(), context.scale(), destination);
                return;
            }
            const auto cd = context.seal_context().get_context_data(context.data_parms_id());
            const std::size_t n = cd->parms().poly_modulus_degree();
            destination.parms_id() = seal::parms_id_zero;
            destination.resize(n);
            encode_coefficients(context, values + index * cols, cols, period, destination.data());
            seal::util::ntt_negacyclic_harvey(destination.data(), cd->small_ntt_tables()[0]);
            destination.parms_id() = cd->parms_id();
            destination.scale() = context.scale();
        }

        void encode_coefficients(
            const PublicContext &context, const double *row, std::size_t cols, std::size_t period, std::uint64_t *coeffs)
        {
            const auto cd = context.seal_context().get_context_data(context.data_parms_id());
            const seal::Modulus &q = cd->parms().coeff_modulus().front();
            const std::size_t n = cd->parms().poly_modulus_degree();
            const double scale = context.scale();
            std::fill(coeffs, coeffs + n, 0);
            for (std::size_t c = 0; c < cols; c++)
            {
                // |value * scale| <= max_norm * scale, which validate_params keeps below q / 4
                coeffs[c * period + period - 1] = to_residue(row[c] * scale, q);
            }
        }

        void decode_coefficients(
            const PublicContext &context, const seal::Plaintext &plain, std::size_t cols, std::size_t period,
            double *row)
        {
            const auto cd = context.seal_context().get_context_data(plain.parms_id());
            if (!cd || cd->parms().coeff_modulus().size() != 1 || !plain.is_ntt_form())
            {
                throw LayoutError("coefficient-layout plaintexts must be in NTT form over one prime");
            }
            const seal::Modulus &q = cd->parms().coeff_modulus().front();
            const std::size_t n = cd->parms().poly_modulus_degree();
            std::vector<std::uint64_t> coeffs(plain.data(), plain.data() + n);
            seal::util::inverse_ntt_negacyclic_harvey(coeffs.data(), cd->small_ntt_tables()[0]);
            const std::uint64_t half = q.value() >> 1;
            for (std::size_t c = 0; c < cols; c++)
            {
                const std::uint64_t v = coeffs[c * period + period - 1];
                const double signed_value =
                    v > half ? -static_cast<double>(q.value() - v) : static_cast<double>(v);
                row[c] = signed_value / plain.scale();
            }
        }
    } // namespace detail
} // namespace hevit

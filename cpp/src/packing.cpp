// Copyright (c) hevit developers. MIT license.
#include "hevit/packing.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/public_context.h"
#include "seal/util/ntt.h"
#include <algorithm>
#include <cmath>
#include <sstream>

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

    bool batch_in_coefficients(const PublicContext &context) noexcept
    {
        return context.seal_context().first_context_data()->parms().coeff_modulus().size() == 1;
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
        std::size_t check_plain_input(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout)
        {
            const std::size_t n = context.params().poly_modulus_degree;
            const std::size_t slots = n / 2;
            if (rows == 0 || cols == 0)
            {
                throw LayoutError("cannot encrypt an empty matrix: got shape (" + std::to_string(rows) + ", " +
                                  std::to_string(cols) + ")");
            }
            if (cols > max_cols)
            {
                throw LayoutError("too many columns: " + std::to_string(cols));
            }
            std::size_t period = 0;
            if (layout == Layout::coefficient)
            {
                if (context.seal_context().first_context_data()->parms().coeff_modulus().size() != 1)
                {
                    throw LayoutError(
                        "the coefficient layout needs one data prime (its values are read coefficient by coefficient "
                        "from one residue): use the 'throughput' or 'latency' preset");
                }
                if (cols > n)
                {
                    throw LayoutError(
                        "coefficient layout holds at most N=" + std::to_string(n) + " values per row, got " +
                        std::to_string(cols));
                }
                if (rows > max_sample_rows)
                {
                    throw LayoutError(
                        "coefficient layout holds at most " + std::to_string(max_sample_rows) +
                        " rows per EncryptedBatch, got " + std::to_string(rows));
                }
                period = 1;
            }
            else if (layout == Layout::batch)
            {
                if (rows > n)
                {
                    throw LayoutError(
                        "batch layout holds at most N=" + std::to_string(n) + " rows per EncryptedBatch with these "
                        "parameters, got " + std::to_string(rows) + "; split the rows into chunks of " +
                        std::to_string(n));
                }
            }
            else
            {
                period = next_pow2(cols);
                if (period > slots)
                {
                    throw LayoutError(
                        "sample layout needs next_pow2(cols)=" + std::to_string(period) + " <= N/2=" +
                        std::to_string(slots) + " slots; use the batch layout or a larger poly_modulus_degree");
                }
                if (rows > max_sample_rows)
                {
                    throw LayoutError(
                        "sample layout holds at most " + std::to_string(max_sample_rows) + " rows per EncryptedBatch, got " +
                        std::to_string(rows) + "; split the rows or use the batch layout");
                }
            }
            const double max_norm = context.params().max_norm;
            for (std::size_t r = 0; r < rows; r++)
            {
                double norm2 = 0.0;
                const double *row = values + r * cols;
                for (std::size_t c = 0; c < cols; c++)
                {
                    if (!std::isfinite(row[c]))
                    {
                        throw ValueRangeError(
                            "input has a non-finite value (NaN or inf) at row " + std::to_string(r) + ", column " +
                            std::to_string(c));
                    }
                    norm2 += row[c] * row[c];
                }
                const double norm = std::sqrt(norm2);
                if (norm > max_norm * (1.0 + 1e-12))
                {
                    std::ostringstream out;
                    out << "row " << r << " has L2 norm " << norm << " above max_norm=" << max_norm
                        << " of these parameters (values too large for the chosen scale); rescale the features "
                           "or use CkksParams with a larger max_norm (and enough data modulus bits)";
                    throw ValueRangeError(out.str());
                }
            }
            return period;
        }

        void pack_slots(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t period, std::size_t index, std::vector<std::complex<double>> &slots)
        {
            const std::size_t n = context.params().poly_modulus_degree;
            const std::size_t half = n / 2;
            slots.assign(half, std::complex<double>(0.0, 0.0));
            if (layout == Layout::batch)
            {
                const std::size_t g = index / cols;
                const std::size_t j = index % cols;
                const std::size_t base = g * n;
                for (std::size_t s = 0; s < half; s++)
                {
                    const std::size_t re_row = base + s;
                    const std::size_t im_row = base + half + s;
                    const double re = re_row < rows ? values[re_row * cols + j] : 0.0;
                    const double im = im_row < rows ? values[im_row * cols + j] : 0.0;
                    slots[s] = std::complex<double>(re, im);
                }
                return;
            }
            const std::size_t re_row = 2 * index;
            const std::size_t im_row = re_row + 1;
            for (std::size_t s = 0; s < period && s < cols; s++)
            {
                const double re = values[re_row * cols + s];
                const double im = im_row < rows ? values[im_row * cols + s] : 0.0;
                slots[s] = std::complex<double>(re, im);
            }
            for (std::size_t start = period; start < half; start += period)
            {
                std::copy(slots.begin(), slots.begin() + static_cast<std::ptrdiff_t>(period), slots.begin() + static_cast<std::ptrdiff_t>(start));
            }
        }

        void unpack_slots(
            const std::vector<std::complex<double>> &slots, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t n, std::size_t index, double *out)
        {
            const std::size_t half = n / 2;
            if (layout == Layout::batch)
            {
                const std::size_t g = index / cols;
                const std::size_t j = index % cols;
                const std::size_t base = g * n;
                for (std::size_t s = 0; s < half; s++)
                {
                    if (base + s < rows)
                    {
                        out[(base + s) * cols + j] = slots[s].real();
                    }
                    if (base + half + s < rows)
                    {
                        out[(base + half + s) * cols + j] = slots[s].imag();
                    }
                }
                return;
            }
            const std::size_t re_row = 2 * index;
            for (std::size_t c = 0; c < cols; c++)
            {
                out[re_row * cols + c] = slots[c].real();
                if (re_row + 1 < rows)
                {
                    out[(re_row + 1) * cols + c] = slots[c].imag();
                }
            }
        }

        void encode_plain(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t period, std::size_t index, seal::Plaintext &destination)
        {
            if (layout == Layout::sample || (layout == Layout::batch && !batch_in_coefficients(context)))
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
            encode_plain_coefficients(context, values, rows, cols, layout, period, index, destination.data());
            detail::forward_ntt(destination.data(), cd->small_ntt_tables()[0]);
            destination.parms_id() = cd->parms_id();
            destination.scale() = context.scale();
        }

        void encode_plain_coefficients(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t period, std::size_t index, std::uint64_t *coeffs)
        {
            if (layout == Layout::coefficient)
            {
                encode_coefficients(context, values + index * cols, cols, period, coeffs);
                return;
            }
            encode_batch_columns(context, values, rows, cols, index / cols, index % cols, 1, coeffs);
        }

        void encode_batch_columns(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, std::size_t group,
            std::size_t first_col, std::size_t count, std::uint64_t *coeffs)
        {
            const auto cd = context.seal_context().get_context_data(context.data_parms_id());
            const seal::Modulus &q = cd->parms().coeff_modulus().front();
            const std::size_t n = cd->parms().poly_modulus_degree();
            const double scale = context.scale();
            const std::size_t base = group * n;
            const std::size_t used = base < rows ? std::min(n, rows - base) : 0;
            std::fill(coeffs, coeffs + count * n, 0);
            for (std::size_t s = 0; s < used; s++)
            {
                // one pass over each row's neighbouring columns (a cache line) for `count` ciphertexts
                const double *row = values + (base + s) * cols + first_col;
                for (std::size_t c = 0; c < count; c++)
                {
                    // |value * scale| <= max_norm * scale, which validate_params keeps below q / 4
                    coeffs[c * n + s] = to_residue(row[c] * scale, q);
                }
            }
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

        namespace
        {
            /** A decrypted plaintext's coefficients (NTT form, one prime) as signed values / scale. */
            std::vector<double> signed_coefficients(
                const PublicContext &context, const seal::Plaintext &plain, const char *layout)
            {
                const auto cd = context.seal_context().get_context_data(plain.parms_id());
                if (!cd || cd->parms().coeff_modulus().size() != 1 || !plain.is_ntt_form())
                {
                    throw LayoutError(
                        std::string(layout) + "-layout plaintexts in coefficients must be in NTT form over one prime");
                }
                const seal::Modulus &q = cd->parms().coeff_modulus().front();
                const std::size_t n = cd->parms().poly_modulus_degree();
                std::vector<std::uint64_t> coeffs(plain.data(), plain.data() + n);
                detail::inverse_ntt(coeffs.data(), cd->small_ntt_tables()[0]);
                const std::uint64_t half = q.value() >> 1;
                std::vector<double> values(n);
                for (std::size_t i = 0; i < n; i++)
                {
                    const std::uint64_t v = coeffs[i];
                    values[i] = (v > half ? -static_cast<double>(q.value() - v) : static_cast<double>(v)) / plain.scale();
                }
                std::fill(coeffs.begin(), coeffs.end(), 0); // a decrypted plaintext
                return values;
            }
        } // namespace

        void decode_batch_coefficients(
            const PublicContext &context, const seal::Plaintext &plain, std::size_t rows, std::size_t cols,
            std::size_t index, double *out)
        {
            std::vector<double> values = signed_coefficients(context, plain, "batch");
            const std::size_t n = values.size();
            const std::size_t base = (index / cols) * n;
            const std::size_t j = index % cols;
            const std::size_t count = base < rows ? std::min(n, rows - base) : 0;
            for (std::size_t s = 0; s < count; s++)
            {
                out[(base + s) * cols + j] = values[s];
            }
            std::fill(values.begin(), values.end(), 0.0);
        }

        void decode_coefficients(
            const PublicContext &context, const seal::Plaintext &plain, std::size_t cols, std::size_t period,
            double *row)
        {
            std::vector<double> values = signed_coefficients(context, plain, "coefficient");
            for (std::size_t c = 0; c < cols; c++)
            {
                row[c] = values[c * period + period - 1];
            }
            std::fill(values.begin(), values.end(), 0.0);
        }

        void decode_plain(
            const PublicContext &context, const seal::Plaintext &plain, Layout layout, std::size_t rows,
            std::size_t cols, std::size_t period, std::size_t index, double *out)
        {
            if (layout == Layout::coefficient)
            {
                decode_coefficients(context, plain, cols, period, out + index * cols);
                return;
            }
            if (layout == Layout::batch && batch_in_coefficients(context))
            {
                decode_batch_coefficients(context, plain, rows, cols, index, out);
                return;
            }
            std::vector<std::complex<double>> slots;
            context.encoder().decode(plain, slots);
            unpack_slots(slots, rows, cols, layout, context.params().poly_modulus_degree, index, out);
            std::fill(slots.begin(), slots.end(), std::complex<double>(0.0, 0.0));
        }
    } // namespace detail
} // namespace hevit

// Copyright (c) hevit developers. MIT license.
#include "hevit/inspection.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/packing.h"
#include "seal/util/ntt.h"
#include <complex>
#include <stdexcept>

namespace hevit
{
    std::vector<std::uint64_t> Inspection::ciphertext_coefficients(const EncryptedBatch &batch, std::size_t index)
    {
        const auto &cts = batch.ciphertexts();
        if (index >= cts.size())
        {
            throw ValueRangeError("ciphertext index " + std::to_string(index) + " is out of range");
        }
        const seal::Ciphertext &ct = cts[index];
        if (ct.size() != 2 || !ct.is_ntt_form())
        {
            throw LayoutError("expected a size-2 ciphertext in NTT form");
        }
        const auto cd = batch.context()->seal_context().get_context_data(ct.parms_id());
        const std::size_t n = ct.poly_modulus_degree();
        std::vector<std::uint64_t> out(2 * n);
        for (std::size_t p = 0; p < 2; p++)
        {
            // polynomial p, first RNS limb
            std::copy_n(ct.data(p), n, out.begin() + static_cast<std::ptrdiff_t>(p * n));
            detail::inverse_ntt(out.data() + p * n, cd->small_ntt_tables()[0]);
        }
        return out;
    }

    std::vector<std::uint64_t> Inspection::plaintext_coefficients(
        const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout,
        std::size_t index)
    {
        const std::size_t period = detail::check_plain_input(context, values, rows, cols, layout);
        const std::size_t n = context.params().poly_modulus_degree;
        if (index >= ciphertext_count(layout, rows, cols, n))
        {
            throw ValueRangeError("ciphertext index " + std::to_string(index) + " is out of range");
        }
        seal::Plaintext pt;
        detail::encode_plain(context, values, rows, cols, layout, period, index, pt);
        const auto cd = context.seal_context().get_context_data(context.data_parms_id());
        std::vector<std::uint64_t> out(pt.data(), pt.data() + n);
        detail::inverse_ntt(out.data(), cd->small_ntt_tables()[0]);
        return out;
    }

    std::uint64_t Inspection::first_prime(const PublicContext &context)
    {
        const auto cd = context.seal_context().get_context_data(context.data_parms_id());
        return cd->parms().coeff_modulus()[0].value();
    }
} // namespace hevit

// Copyright (c) hevit developers. MIT license.
#include "hevit/inspection.h"
#include "hevit/discrete_gaussian.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/packing.h"
#include "seal/util/ntt.h"
#include <complex>
#include <limits>
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

    EncryptedBatch Inspection::shift_c1(const EncryptedBatch &batch, std::size_t coefficient, std::uint64_t amount)
    {
        const std::size_t n = batch.context()->params().poly_modulus_degree;
        if (coefficient >= n)
        {
            throw std::invalid_argument("coefficient index out of range");
        }
        std::vector<seal::Ciphertext> cts = batch.ciphertexts();
        for (auto &ct : cts)
        {
            const auto cd = batch.context()->seal_context().get_context_data(ct.parms_id());
            const auto &primes = cd->parms().coeff_modulus();
            std::vector<std::uint64_t> poly(n);
            for (std::size_t i = 0; i < primes.size(); i++)
            {
                std::copy_n(ct.data(1) + i * n, n, poly.begin());
                detail::inverse_ntt(poly.data(), cd->small_ntt_tables()[i]);
                poly[coefficient] = (poly[coefficient] + amount % primes[i].value()) % primes[i].value();
                detail::forward_ntt(poly.data(), cd->small_ntt_tables()[i]);
                std::copy_n(poly.begin(), n, ct.data(1) + i * n);
            }
        }
        return EncryptedBatch(
            batch.context(), batch.layout(), batch.rows(), batch.cols(), batch.period(), batch.norm_bound(),
            std::move(cts));
    }

    std::uint64_t Inspection::first_prime(const PublicContext &context)
    {
        const auto cd = context.seal_context().get_context_data(context.data_parms_id());
        return cd->parms().coeff_modulus()[0].value();
    }

    std::vector<std::uint64_t> Inspection::decrypted_residues(
        const SecretContext &secret, const EncryptedBatch &batch, std::size_t index, double sigma,
        const std::array<std::uint8_t, 32> &noise_key)
    {
        const auto &cts = batch.ciphertexts();
        if (index >= cts.size())
        {
            throw std::invalid_argument("ciphertext index out of range");
        }
        if (!batch.context()->same_keys_as(*secret.public_context()))
        {
            throw ContextMismatchError("this EncryptedBatch was encrypted under another key set");
        }
        const seal::SEALContext &context = secret.public_context()->seal_context();
        const auto cd = context.get_context_data(cts[index].parms_id());
        seal::Plaintext pt;
        seal::Decryptor(context, secret.secret_key()).decrypt(cts[index], pt);
        if (sigma != 0.0)
        {
            detail::check_flooding_sigma(sigma, *cd);
            ChaCha20Stream stream(noise_key, static_cast<std::uint32_t>(index));
            DiscreteGaussian sampler(sigma, stream);
            std::vector<__int128> noise;
            detail::flood_plaintext(pt, *cd, sampler, noise);
        }
        const std::size_t n = cd->parms().poly_modulus_degree();
        const std::size_t k = cd->parms().coeff_modulus().size();
        std::vector<std::uint64_t> out(pt.data(), pt.data() + n * k);
        for (std::size_t l = 0; l < k; l++)
        {
            detail::inverse_ntt(out.data() + l * n, cd->small_ntt_tables()[l]);
        }
        std::fill(pt.data(), pt.data() + pt.coeff_count(), 0);
        return out;
    }

    std::vector<std::int64_t> Inspection::discrete_gaussian_samples(
        double sigma, const std::array<std::uint8_t, 32> &key, std::uint32_t nonce_word, std::size_t count)
    {
        ChaCha20Stream stream(key, nonce_word);
        DiscreteGaussian sampler(sigma, stream);
        std::vector<std::int64_t> out(count);
        for (auto &v : out)
        {
            const __int128 z = sampler.sample();
            if (z > std::numeric_limits<std::int64_t>::max() || z < std::numeric_limits<std::int64_t>::min())
            {
                throw std::invalid_argument("discrete Gaussian sample outside the int64 range");
            }
            v = static_cast<std::int64_t>(z);
        }
        return out;
    }
} // namespace hevit

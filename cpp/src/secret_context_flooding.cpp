// Copyright (c) hevit developers. MIT license.
//
// The key holder's releases: decryption with integer-domain noise flooding, and keys derived from
// the secret key (the flooding-noise key every holder of the key derives alike).
#include "hevit/discrete_gaussian.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/parallel.h"
#include "hevit/secret_context.h"
#include "seal/util/blake2.h"
#include "seal/util/uintarithsmallmod.h"
#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace hevit
{
    namespace
    {
        /** Domain separation of derive_key: the hash of the secret key, and the derivation. */
        constexpr char key_hash_domain[] = "hevit/SecretContext/secret-key-hash/v1";
        constexpr char derive_domain[] = "hevit/SecretContext/derive_key/v1";

        /** z mod q for a signed 128-bit z, in [0, q). */
        inline std::uint64_t reduce_signed(__int128 z, const seal::Modulus &q) noexcept
        {
            const bool negative = z < 0;
            const unsigned __int128 magnitude =
                negative ? static_cast<unsigned __int128>(-(z + 1)) + 1 : static_cast<unsigned __int128>(z);
            std::uint64_t r;
            if ((magnitude >> 64) == 0)
            {
                r = seal::util::barrett_reduce_64(static_cast<std::uint64_t>(magnitude), q);
            }
            else
            {
                r = static_cast<std::uint64_t>(magnitude % q.value()); // |z| >= 2^64: probability below exp(-8000)
            }
            return negative && r != 0 ? q.value() - r : r;
        }
    } // namespace

    namespace detail
    {
        double check_flooding_sigma(double sigma, const seal::SEALContext::ContextData &cd)
        {
            const double exact = DiscreteGaussian::representable_sigma(sigma);
            const double modulus_bits = log2_modulus(cd);
            // 64 sigma < Q / 4: a discrete Gaussian beyond 64 sigma has probability below exp(-2000)
            if (!(std::log2(exact) + 6.0 < modulus_bits - 2.0))
            {
                std::ostringstream out;
                out << "flooding sigma " << exact << " (2^" << std::log2(exact) << ") is too large for this level's "
                    << modulus_bits << "-bit modulus: 64 sigma must stay below a quarter of it (2^"
                    << modulus_bits - 2.0 << "); use parameters with a larger data modulus";
                throw ParameterError(out.str());
            }
            return exact;
        }

        void flood_plaintext(
            seal::Plaintext &plain, const seal::SEALContext::ContextData &cd, DiscreteGaussian &sampler,
            std::vector<__int128> &noise)
        {
            const auto &primes = cd.parms().coeff_modulus();
            const std::size_t n = cd.parms().poly_modulus_degree();
            const auto *tables = cd.small_ntt_tables();
            noise.resize(n);
            for (std::size_t j = 0; j < n; j++)
            {
                noise[j] = sampler.sample();
            }
            for (std::size_t l = 0; l < primes.size(); l++)
            {
                std::uint64_t *limb = plain.data() + l * n;
                const std::uint64_t q = primes[l].value();
                detail::inverse_ntt(limb, tables[l]);
                for (std::size_t j = 0; j < n; j++)
                {
                    std::uint64_t v = limb[j] + reduce_signed(noise[j], primes[l]);
                    v -= q & (0 - static_cast<std::uint64_t>(v >= q));
                    limb[j] = v;
                }
                detail::forward_ntt(limb, tables[l]);
            }
            std::fill(noise.begin(), noise.end(), 0);
        }
    } // namespace detail

    void SecretContext::decrypt_flooded(
        const EncryptedBatch &batch, double sigma, const std::array<std::uint8_t, 32> &noise_key, double *out,
        int threads) const
    {
        if (!batch.context()->same_keys_as(*public_))
        {
            throw ContextMismatchError(
                "this EncryptedBatch was encrypted under another key set; it cannot be decrypted with this key");
        }
        const auto &cts = batch.ciphertexts();
        if (cts.size() > std::numeric_limits<std::uint32_t>::max())
        {
            throw ResourceError("decrypt_flooded: more than 2^32 ciphertexts in one batch");
        }
        const seal::SEALContext &context = public_->seal_context();
        for (const auto &ct : cts)
        {
            if (ct.size() != 2)
            {
                throw LayoutError("an EncryptedBatch ciphertext must have two polynomials");
            }
            const auto cd = context.get_context_data(ct.parms_id());
            if (!cd)
            {
                throw ContextMismatchError("a ciphertext of this batch is at no level of this key set");
            }
            detail::check_flooding_sigma(sigma, *cd);
        }
        // one Decryptor for the batch, shared by the workers (see decrypt)
        seal::Decryptor decryptor(context, secret_key_);
        parallel_for(cts.size(), threads, [&](std::size_t i) {
            seal::Plaintext pt;
            decryptor.decrypt(cts[i], pt);
            // ciphertext i's noise depends on (noise_key, i) only: the same at any thread count
            ChaCha20Stream stream(noise_key, static_cast<std::uint32_t>(i));
            DiscreteGaussian sampler(sigma, stream);
            std::vector<__int128> noise;
            detail::flood_plaintext(pt, *context.get_context_data(cts[i].parms_id()), sampler, noise);
            detail::decode_plain(*public_, pt, batch.layout(), batch.rows(), batch.cols(), batch.period(), i, out);
            std::fill(pt.data(), pt.data() + pt.coeff_count(), 0);
        });
    }

    std::array<std::uint8_t, 32> SecretContext::derive_key(std::string_view label) const
    {
        // the PRF key: a one-way hash of the ternary secret key (coefficient form, one byte each)
        std::vector<std::uint8_t> key_material(sizeof(key_hash_domain) + secret_coefficients_.size());
        std::copy(key_hash_domain, key_hash_domain + sizeof(key_hash_domain), key_material.begin());
        std::transform(
            secret_coefficients_.begin(), secret_coefficients_.end(),
            key_material.begin() + static_cast<std::ptrdiff_t>(sizeof(key_hash_domain)),
            [](std::int8_t c) { return static_cast<std::uint8_t>(c); });
        std::array<std::uint8_t, 64> prf_key{};
        blake2b(prf_key.data(), prf_key.size(), key_material.data(), key_material.size(), nullptr, 0);
        std::fill(key_material.begin(), key_material.end(), 0);

        std::string message(derive_domain, sizeof(derive_domain)); // the terminating zero separates the label
        message.append(label.data(), label.size());
        std::array<std::uint8_t, 32> out{};
        blake2b(out.data(), out.size(), message.data(), message.size(), prf_key.data(), prf_key.size());
        std::fill(prf_key.begin(), prf_key.end(), 0);
        return out;
    }
} // namespace hevit

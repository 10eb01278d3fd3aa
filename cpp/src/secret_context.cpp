// Copyright (c) hevit developers. MIT license.
#include "hevit/secret_context.h"
#include "hevit/key_codec.h"
#include "hevit/modular.h"
#include "hevit/errors.h"
#include "hevit/parallel.h"
#include "hevit/prng.h"
#include "seal/util/ntt.h"
#include "seal/util/polyarithsmallmod.h"
#include "seal/util/rlwe.h"
#include <algorithm>
#include <array>
#include <cstring>

namespace hevit
{
    namespace
    {
        /** Neighbouring columns encoded together by batch-layout encryption in coefficients (a row
        of 768 features is 6 KB: reading 32 of its values at once amortises the TLB miss). */
        constexpr std::size_t column_block = 32;

        /**
        Symmetric CKKS encryption whose c1 comes from a fresh public seed, so that only c0 and the
        seed need to travel: c0 = -(c1 s) + NTT(m + e). The seed (64 bytes from the OS) is expanded
        by ChaCha20 (detail::expand_seed, the same expansion the server runs); the noise comes
        from a ChaCha20 stream keyed by fresh OS entropy. plain holds limb after limb either the
        message in coefficient form (plain_is_ntt false: the noise is added first and one forward
        NTT serves both) or, from the CKKS encoder, in NTT form (the noise gets its own NTT).
        */
        void encrypt_seeded(
            const seal::SEALContext &context, const seal::SecretKey &secret_key, const std::uint64_t *plain,
            bool plain_is_ntt, const seal::parms_id_type &parms_id, double scale, seal::Ciphertext &destination,
            seal::prng_seed_type &seed)
        {
            using namespace seal::util;
            const auto cd = context.get_context_data(parms_id);
            const auto &parms = cd->parms();
            const auto &primes = parms.coeff_modulus();
            const std::size_t n = parms.poly_modulus_degree();
            const std::size_t k = primes.size();
            const auto *ntt_tables = cd->small_ntt_tables();

            destination.resize(context, parms_id, 2);
            destination.is_ntt_form() = true;
            destination.scale() = scale;

            // the public seed and the noise key from one request to the operating system
            std::array<std::uint8_t, sizeof(seal::prng_seed_type) + sizeof(ChaCha20Stream::Key)> entropy;
            detail::os_random(entropy.data(), entropy.size());
            std::memcpy(seed.data(), entropy.data(), sizeof(seal::prng_seed_type));
            ChaCha20Stream::Key noise_key;
            std::memcpy(noise_key.data(), entropy.data() + sizeof(seal::prng_seed_type), noise_key.size());
            std::fill(entropy.begin(), entropy.end(), 0);
            detail::expand_seed(context, seed, destination);

            ChaCha20Stream noise_stream(noise_key, 0);
            std::fill(noise_key.begin(), noise_key.end(), 0);
            std::vector<std::uint64_t> noise(n * k);
            detail::sample_noise(noise_stream, parms, noise.data());
            std::uint64_t *c0 = destination.data(0);
            const std::uint64_t *c1 = destination.data(1);
            const std::uint64_t *s = secret_key.data().data();
            for (std::size_t i = 0; i < k; i++)
            {
                std::uint64_t *e = noise.data() + i * n;
                if (plain_is_ntt)
                {
                    detail::forward_ntt(e, ntt_tables[i]);
                    add_poly_coeffmod(e, plain + i * n, n, primes[i], e);
                }
                else
                {
                    add_poly_coeffmod(e, plain + i * n, n, primes[i], e);
                    detail::forward_ntt(e, ntt_tables[i]);
                }
                // c0 = -(c1 * s) + (m + e), all in NTT form
                dyadic_product_coeffmod(s + i * n, c1 + i * n, n, primes[i], c0 + i * n);
                negate_poly_coeffmod(c0 + i * n, n, primes[i], c0 + i * n);
                add_poly_coeffmod(c0 + i * n, e, n, primes[i], c0 + i * n);
            }
            std::fill(noise.begin(), noise.end(), 0);
        }
    } // namespace

    SecretContext::SecretContext(std::shared_ptr<const PublicContext> public_context, seal::SecretKey secret_key)
        : public_(std::move(public_context)), secret_key_(std::move(secret_key))
    {
        if (!seal::is_valid_for(secret_key_, public_->seal_context()))
        {
            throw SerializationError("secret key is not valid for these parameters");
        }
        const auto cd = public_->seal_context().key_context_data();
        const std::size_t n = cd->parms().poly_modulus_degree();
        std::vector<std::uint64_t> residue(secret_key_.data().data(), secret_key_.data().data() + n);
        detail::inverse_ntt(residue.data(), cd->small_ntt_tables()[0]);
        secret_coefficients_.resize(n);
        for (std::size_t i = 0; i < n; i++)
        {
            secret_coefficients_[i] = residue[i] == 0 ? 0 : (residue[i] == 1 ? 1 : -1);
        }
        std::fill(residue.begin(), residue.end(), 0);
    }

    SecretContext::~SecretContext()
    {
        std::fill(secret_coefficients_.begin(), secret_coefficients_.end(), 0);
    }

    std::shared_ptr<SecretContext> SecretContext::generate(const CkksParams &params, const std::vector<int> &rotation_steps)
    {
        EvaluationKeySpec keys;
        keys.rotation_steps = rotation_steps;
        return generate(params, keys);
    }

    std::shared_ptr<SecretContext> SecretContext::generate(const CkksParams &params, const EvaluationKeySpec &keys)
    {
        auto context = PublicContext::make_seal_context(params);
        const std::size_t slots = params.poly_modulus_degree / 2;
        std::vector<int> steps;
        for (int step : keys.rotation_steps)
        {
            if (!is_valid_rotation_step(params, step))
            {
                throw ParameterError(
                    "rotation step " + std::to_string(step) + " is out of range: use nonzero steps in (-" +
                    std::to_string(slots) + ", " + std::to_string(slots) + ")");
            }
            steps.push_back(step);
        }
        std::sort(steps.begin(), steps.end());
        steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
        if ((!steps.empty() || keys.conjugation || keys.relinearization) && !context->using_keyswitching())
        {
            throw ParameterError(
                "rotations, conjugation and relinearisation need a special (key-switching) prime: these "
                "parameters have a single prime; use a preset with a special prime or add a prime to "
                "coeff_modulus_bits");
        }
        seal::KeyGenerator keygen(*context);
        seal::PublicKey public_key;
        keygen.create_public_key(public_key);
        std::optional<seal::GaloisKeys> galois_keys;
        if (!steps.empty() || keys.conjugation)
        {
            galois_keys.emplace();
            keygen.create_galois_keys(detail::galois_elements(*context, steps, keys.conjugation), *galois_keys);
        }
        std::optional<seal::RelinKeys> relin_keys;
        if (keys.relinearization)
        {
            relin_keys.emplace();
            keygen.create_relin_keys(*relin_keys);
        }
        auto pub = std::make_shared<const PublicContext>(
            params, std::move(public_key), std::move(galois_keys), steps, keys.conjugation, std::move(relin_keys));
        return std::make_shared<SecretContext>(std::move(pub), keygen.secret_key());
    }

    EncryptedBatch SecretContext::encrypt(
        const double *values, std::size_t rows, std::size_t cols, Layout layout, int threads) const
    {
        const PublicContext &context = *public_;
        const std::size_t period = detail::check_plain_input(context, values, rows, cols, layout);
        const std::size_t count = ciphertext_count(layout, rows, cols, context.params().poly_modulus_degree);
        std::vector<seal::Ciphertext> cts(count);
        std::vector<seal::prng_seed_type> seeds(count);
        const std::size_t n = context.params().poly_modulus_degree;
        // values in coefficients: message and noise share one forward NTT (no FFT)
        auto encrypt_coefficients = [&](const std::uint64_t *coeffs, std::size_t i) {
            encrypt_seeded(
                context.seal_context(), secret_key_, coeffs, false, context.data_parms_id(), context.scale(), cts[i],
                seeds[i]);
        };
        if (layout == Layout::batch && batch_in_coefficients(context))
        {
            // Ciphertext (g, j) = index g * cols + j holds column j of row group g. Tasks of
            // column_block neighbouring columns read each row's values once (a strided gather of
            // one column per task spent a fifth of the encryption in cache misses).
            const std::size_t blocks_per_group = (cols + column_block - 1) / column_block;
            const std::size_t groups = count / cols;
            parallel_for(groups * blocks_per_group, threads, [&](std::size_t task) {
                const std::size_t g = task / blocks_per_group;
                const std::size_t first = (task % blocks_per_group) * column_block;
                const std::size_t width = std::min(column_block, cols - first);
                std::vector<std::uint64_t> coeffs(width * n);
                detail::encode_batch_columns(context, values, rows, cols, g, first, width, coeffs.data());
                for (std::size_t c = 0; c < width; c++)
                {
                    encrypt_coefficients(coeffs.data() + c * n, g * cols + first + c);
                }
                std::fill(coeffs.begin(), coeffs.end(), 0);
            });
        }
        else if (layout == Layout::coefficient)
        {
            parallel_for(count, threads, [&](std::size_t i) {
                std::vector<std::uint64_t> coeffs(n);
                detail::encode_coefficients(context, values + i * cols, cols, period, coeffs.data());
                encrypt_coefficients(coeffs.data(), i);
                std::fill(coeffs.begin(), coeffs.end(), 0);
            });
        }
        else
        {
            parallel_for(count, threads, [&](std::size_t i) {
                seal::Plaintext pt;
                detail::encode_plain(context, values, rows, cols, layout, period, i, pt);
                encrypt_seeded(
                    context.seal_context(), secret_key_, pt.data(), true, pt.parms_id(), pt.scale(), cts[i], seeds[i]);
            });
        }
        return EncryptedBatch(
            public_, layout, rows, cols, period, context.params().max_norm, std::move(cts), std::move(seeds));
    }

    void SecretContext::decrypt(const EncryptedBatch &batch, double *out, int threads) const
    {
        if (!batch.context()->same_keys_as(*public_))
        {
            throw ContextMismatchError(
                "this EncryptedBatch was encrypted under another key set; it cannot be decrypted with this key");
        }
        const auto &cts = batch.ciphertexts();
        // One Decryptor for the whole batch (it copies and NTT-transforms the key when built: set-up
        // that must not run per ciphertext). Its workers share it: for two-polynomial ciphertexts,
        // the only kind an EncryptedBatch holds, SEAL computes no further key powers and decrypt
        // only reads the key array under its reader lock.
        for (const auto &ct : cts)
        {
            if (ct.size() != 2)
            {
                throw LayoutError("an EncryptedBatch ciphertext must have two polynomials");
            }
        }
        seal::Decryptor decryptor(public_->seal_context(), secret_key_);
        parallel_for(cts.size(), threads, [&](std::size_t i) {
            seal::Plaintext pt;
            decryptor.decrypt(cts[i], pt);
            detail::decode_plain(*public_, pt, batch.layout(), batch.rows(), batch.cols(), batch.period(), i, out);
        });
    }

    void SecretContext::decrypt(const CompactBatch &batch, double *out, int threads) const
    {
        if (!batch.context()->same_keys_as(*public_))
        {
            throw ContextMismatchError(
                "this CompactBatch was made under another key set; it cannot be decrypted with this key");
        }
        const std::size_t n = public_->params().poly_modulus_degree;
        const std::vector<std::int8_t> &s = secret_coefficients_;
        const int bits = batch.bits();
        const std::uint64_t mask = (std::uint64_t(1) << bits) - 1;
        const std::uint64_t half = std::uint64_t(1) << (bits - 1);
        const std::size_t cols = batch.cols();
        const std::size_t period = batch.period();
        parallel_for(batch.rows(), threads, [&](std::size_t m) {
            const std::uint64_t *c1 = batch.c1().data() + m * n;
            for (std::size_t c = 0; c < cols; c++)
            {
                // coefficient t of c1 s in Z[X]/(X^N + 1): sum_{j <= t} c1_j s_{t-j} - sum_{j > t} c1_j s_{N+t-j};
                // unsigned wrap-around is exact mod 2^bits
                const std::size_t t = c * period + period - 1;
                std::uint64_t acc = batch.c0()[m * cols + c];
                for (std::size_t j = 0; j <= t; j++)
                {
                    acc += c1[j] * static_cast<std::uint64_t>(static_cast<std::int64_t>(s[t - j]));
                }
                for (std::size_t j = t + 1; j < n; j++)
                {
                    acc -= c1[j] * static_cast<std::uint64_t>(static_cast<std::int64_t>(s[n + t - j]));
                }
                acc &= mask;
                const double value = acc >= half ? -static_cast<double>((mask - acc) + 1) : static_cast<double>(acc);
                out[m * cols + c] = value * batch.unit();
            }
        });
    }

    std::string SecretContext::to_bytes() const
    {
        ByteWriter w;
        w.blob(public_->to_bytes());
        std::string sk = detail::encode_secret_key(secret_key_, public_->seal_context());
        w.blob(sk);
        std::fill(sk.begin(), sk.end(), '\0');
        WireHeader header{ ObjectKind::secret_context, public_->params_fingerprint(), public_->keyset_id() };
        std::string out = wrap_payload(header, w.str());
        std::fill(w.str().begin(), w.str().end(), '\0');
        return out;
    }

    std::shared_ptr<SecretContext> SecretContext::from_bytes(std::string_view bytes)
    {
        WireHeader header;
        ByteReader r(unwrap_payload(bytes, ObjectKind::secret_context, header));
        auto pub = PublicContext::from_bytes(r.blob(r.remaining()));
        const auto &params = pub->params();
        const std::string_view sk_bytes = r.blob(detail::key_poly_bytes(pub->seal_context()));
        r.expect_end();
        seal::SecretKey secret_key = detail::decode_secret_key(sk_bytes, pub->seal_context());
        if (pub->params_fingerprint() != header.params_fingerprint || pub->keyset_id() != header.keyset_id)
        {
            throw SerializationError("corrupted SecretContext: header does not match its public context");
        }
        // The secret key must be the one that made the public key, in every prime of the key level
        // (a check by decrypting a fresh encryption reads only the data primes: a corrupted
        // special-prime limb passed it, and would have made wrong evaluation keys)
        detail::check_key_pair(secret_key, pub->public_key(), pub->seal_context());
        return std::make_shared<SecretContext>(std::move(pub), std::move(secret_key));
    }
} // namespace hevit

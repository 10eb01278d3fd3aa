// Copyright (c) hevit developers. MIT license.
#include "hevit/public_context.h"
#include "hevit/errors.h"
#include "hevit/key_codec.h"
#include "hevit/modular.h"
#include <algorithm>
#include <cmath>
#include <sstream>

namespace hevit
{
    namespace
    {
        constexpr std::size_t max_rotation_steps = 4096;
    } // namespace

    std::shared_ptr<const seal::SEALContext> PublicContext::make_seal_context(const CkksParams &params)
    {
        validate_params(params);
        seal::EncryptionParameters parms(seal::scheme_type::ckks);
        parms.set_poly_modulus_degree(params.poly_modulus_degree);
        try
        {
            parms.set_coeff_modulus(seal::CoeffModulus::Create(params.poly_modulus_degree, params.coeff_modulus_bits));
        }
        catch (const std::exception &e)
        {
            throw ParameterError(std::string("SEAL cannot make these primes: ") + e.what());
        }
        auto context = std::make_shared<const seal::SEALContext>(parms, true, seal::sec_level_type::tc128);
        if (!context->parameters_set())
        {
            throw ParameterError(
                std::string("SEAL rejects these parameters: ") + context->parameter_error_message());
        }
        return context;
    }

    PublicContext::PublicContext(
        const CkksParams &params, seal::PublicKey public_key, std::optional<seal::GaloisKeys> galois_keys,
        std::vector<int> rotation_steps, bool conjugation, std::optional<seal::RelinKeys> relin_keys)
        : params_(params), seal_context_(make_seal_context(params)), public_key_(std::move(public_key)),
          galois_keys_(std::move(galois_keys)), rotation_steps_(std::move(rotation_steps)), conjugation_(conjugation),
          relin_keys_(std::move(relin_keys))
    {
        std::sort(rotation_steps_.begin(), rotation_steps_.end());
        rotation_steps_.erase(std::unique(rotation_steps_.begin(), rotation_steps_.end()), rotation_steps_.end());
        if (!seal::is_valid_for(public_key_, *seal_context_))
        {
            throw SerializationError("public key is not valid for these parameters");
        }
        if (galois_keys_ && !seal::is_valid_for(*galois_keys_, *seal_context_))
        {
            throw SerializationError("Galois keys are not valid for these parameters");
        }
        // Every listed step must really have its key, and the key set must hold no others.
        const auto galois_tool = seal_context_->key_context_data()->galois_tool();
        if ((!rotation_steps_.empty() || conjugation_) && !galois_keys_)
        {
            throw SerializationError("rotation steps or conjugation are listed but there are no Galois keys");
        }
        if (relin_keys_ && !seal::is_valid_for(*relin_keys_, *seal_context_))
        {
            throw SerializationError("relinearisation keys are not valid for these parameters");
        }
        if (relin_keys_ && relin_keys_->size() != 1)
        {
            throw SerializationError("relinearisation keys must hold exactly one key (for size-3 ciphertexts)");
        }
        if (galois_keys_)
        {
            if (galois_keys_->size() != rotation_steps_.size() + (conjugation_ ? 1 : 0))
            {
                throw SerializationError("Galois keys do not match the listed rotation steps and conjugation");
            }
            if (conjugation_ && !galois_keys_->has_key(galois_tool->get_elt_from_step(0)))
            {
                throw SerializationError("conjugation is listed but its Galois key is missing");
            }
            for (int step : rotation_steps_)
            {
                if (!galois_keys_->has_key(galois_tool->get_elt_from_step(step)))
                {
                    throw SerializationError("no Galois key for listed rotation step " + std::to_string(step));
                }
            }
        }
        encoder_ = std::make_unique<seal::CKKSEncoder>(*seal_context_);
        const std::string encoded = encode_params(params_, *seal_context_);
        params_fingerprint_ = digest16(encoded.data(), encoded.size());
        // The key-set id covers every key, not only the public key: a public key spliced with
        // another key set's evaluation keys is another key set, so batches made under the real
        // one are refused (ContextMismatchError) instead of yielding wrong results.
        std::string material;
        const auto append = [&material](const seal::Ciphertext &ct) {
            material.append(
                reinterpret_cast<const char *>(ct.data()), ct.dyn_array().size() * sizeof(std::uint64_t));
        };
        append(public_key_.data());
        const auto append_switching_keys = [&](const seal::KSwitchKeys &keys) {
            for (const auto &slot : keys.data())
            {
                for (const auto &key : slot)
                {
                    append(key.data());
                }
            }
        };
        if (galois_keys_)
        {
            append_switching_keys(*galois_keys_);
        }
        if (relin_keys_)
        {
            append_switching_keys(*relin_keys_);
        }
        keyset_id_ = digest16(material.data(), material.size());
    }

    bool PublicContext::has_rotation_step(int step) const noexcept
    {
        return std::binary_search(rotation_steps_.begin(), rotation_steps_.end(), step);
    }

    double PublicContext::scale() const noexcept
    {
        return std::ldexp(1.0, params_.scale_bits);
    }

    bool PublicContext::same_keys_as(const PublicContext &other) const noexcept
    {
        return params_fingerprint_ == other.params_fingerprint_ && keyset_id_ == other.keyset_id_;
    }

    std::string PublicContext::encode_params(const CkksParams &params, const seal::SEALContext &context)
    {
        ByteWriter w;
        const auto &primes = context.key_context_data()->parms().coeff_modulus();
        w.u64(params.poly_modulus_degree);
        w.u32(static_cast<std::uint32_t>(primes.size()));
        for (const auto &prime : primes)
        {
            w.u64(prime.value());
        }
        w.i32(params.scale_bits);
        w.f64(params.max_norm);
        return std::move(w.str());
    }

    CkksParams PublicContext::decode_params(ByteReader &r)
    {
        CkksParams params;
        params.poly_modulus_degree = static_cast<std::size_t>(r.u64());
        const std::uint32_t prime_count = r.u32();
        if (prime_count == 0 || prime_count > 64)
        {
            throw SerializationError("malformed parameters: " + std::to_string(prime_count) + " primes");
        }
        std::vector<std::uint64_t> primes(prime_count);
        for (auto &p : primes)
        {
            p = r.u64();
            params.coeff_modulus_bits.push_back(seal::util::get_significant_bit_count(p));
        }
        params.scale_bits = r.i32();
        params.max_norm = r.f64();
        // Re-derive the primes from their sizes and insist on the same values: a context can only
        // be rebuilt from parameters hevit itself would have generated.
        auto context = PublicContext::make_seal_context(params);
        const auto &made = context->key_context_data()->parms().coeff_modulus();
        for (std::size_t i = 0; i < primes.size(); i++)
        {
            if (made[i].value() != primes[i])
            {
                throw SerializationError("malformed parameters: unexpected prime in coeff_modulus");
            }
        }
        return params;
    }

    std::string PublicContext::to_bytes() const
    {
        ByteWriter w;
        w.blob(encode_params(params_, *seal_context_));
        w.u32(static_cast<std::uint32_t>(rotation_steps_.size()));
        for (int step : rotation_steps_)
        {
            w.i32(step);
        }
        w.blob(detail::encode_public_key(public_key_, *seal_context_));
        w.blob(
            galois_keys_ ? detail::encode_galois_keys(*galois_keys_, detail::galois_elements(*seal_context_, rotation_steps_, conjugation_),
                                                      *seal_context_)
                         : std::string());
        w.u32(conjugation_ ? 1 : 0);
        w.blob(relin_keys_ ? detail::encode_relin_keys(*relin_keys_, *seal_context_) : std::string());
        WireHeader header{ ObjectKind::public_context, params_fingerprint_, keyset_id_ };
        return wrap_payload(header, w.str());
    }

    std::shared_ptr<const PublicContext> PublicContext::from_bytes(std::string_view bytes)
    {
        WireHeader header;
        ByteReader r(unwrap_payload(bytes, ObjectKind::public_context, header));
        ByteReader pr(r.blob(1024));
        CkksParams params = decode_params(pr);
        pr.expect_end();
        auto context = make_seal_context(params);
        const std::size_t n = params.poly_modulus_degree;
        const std::size_t k = params.coeff_modulus_bits.size();

        const std::uint32_t step_count = r.u32();
        if (step_count > max_rotation_steps)
        {
            throw SerializationError("malformed context: " + std::to_string(step_count) + " rotation steps");
        }
        std::vector<int> steps(step_count);
        for (auto &step : steps)
        {
            step = r.i32();
            if (!is_valid_rotation_step(params, step))
            {
                throw SerializationError("malformed context: rotation step " + std::to_string(step) + " out of range");
            }
        }
        // hevit's key format: every size follows from the parameters and the listed steps, so
        // the byte counts are checked before anything is allocated (detail/key_codec.h)
        const std::size_t poly = detail::key_poly_bytes(*context);
        seal::PublicKey public_key = detail::decode_public_key(r.blob(2 * poly), *context);
        const std::string_view gk = r.blob(2 * (k - 1) * poly * (step_count + 1));
        const std::uint32_t conjugation = r.u32();
        if (conjugation > 1)
        {
            throw SerializationError("malformed context: conjugation flag " + std::to_string(conjugation));
        }
        std::optional<seal::GaloisKeys> galois_keys;
        if (!gk.empty())
        {
            if (k < 2)
            {
                throw SerializationError("malformed context: Galois keys without a special prime");
            }
            galois_keys = detail::decode_galois_keys(gk, detail::galois_elements(*context, steps, conjugation == 1), *context);
        }
        std::optional<seal::RelinKeys> relin_keys;
        const std::string_view rk = r.blob(2 * (k - 1) * poly);
        if (!rk.empty())
        {
            if (k < 2)
            {
                throw SerializationError("malformed context: relinearisation keys without a special prime");
            }
            relin_keys = detail::decode_relin_keys(rk, *context);
        }
        r.expect_end();
        auto result = std::make_shared<const PublicContext>(
            params, std::move(public_key), std::move(galois_keys), steps, conjugation == 1, std::move(relin_keys));
        if (result->params_fingerprint() != header.params_fingerprint || result->keyset_id() != header.keyset_id)
        {
            throw SerializationError("corrupted context: header fingerprint does not match its contents");
        }
        return result;
    }
} // namespace hevit

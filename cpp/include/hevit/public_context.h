// Copyright (c) hevit developers. MIT license.
#pragma once

#include "hevit/params.h"
#include "hevit/wire.h"
#include "seal/seal.h"
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hevit
{
    class EncryptedBatch;
    enum class Layout : std::uint8_t;

    /** Which evaluation keys a key set carries besides the public key. */
    struct EvaluationKeySpec
    {
        /** Rotation steps with a Galois key. */
        std::vector<int> rotation_steps;
        /** A Galois key for complex conjugation (the two-layer head separates the real and
        imaginary halves of a batch with it). */
        bool conjugation = false;
        /** Relinearisation keys (ciphertext-ciphertext products). */
        bool relinearization = false;
    };

    /**
    Everything a party without the secret key may hold: parameters, the public key, Galois keys
    for exactly the rotation steps (and conjugation) that were asked for, and relinearisation
    keys when asked for. There is no field for a secret key, so a PublicContext can never hold or
    serialize one.

    Immutable after construction and safe to share across threads.
    */
    class PublicContext
    {
    public:
        /**
        Builds a context from parameters and keys.

        @throws ParameterError if params fail validate_params or SEAL rejects them
        */
        PublicContext(
            const CkksParams &params, seal::PublicKey public_key, std::optional<seal::GaloisKeys> galois_keys,
            std::vector<int> rotation_steps, bool conjugation = false,
            std::optional<seal::RelinKeys> relin_keys = std::nullopt);

        /** Makes the SEAL context for params, checking them first. Used by key generation. */
        static std::shared_ptr<const seal::SEALContext> make_seal_context(const CkksParams &params);

        const CkksParams &params() const noexcept { return params_; }
        const seal::SEALContext &seal_context() const noexcept { return *seal_context_; }
        const seal::CKKSEncoder &encoder() const noexcept { return *encoder_; }
        const seal::PublicKey &public_key() const noexcept { return public_key_; }

        /** Galois keys, or nullptr when the context was made without rotation steps. */
        const seal::GaloisKeys *galois_keys() const noexcept { return galois_keys_ ? &*galois_keys_ : nullptr; }

        /** The rotation steps that have a Galois key, sorted. */
        const std::vector<int> &rotation_steps() const noexcept { return rotation_steps_; }
        bool has_rotation_step(int step) const noexcept;
        /** True when the Galois keys include complex conjugation. */
        bool has_conjugation() const noexcept { return conjugation_; }
        /** Relinearisation keys, or nullptr when the key set has none. */
        const seal::RelinKeys *relin_keys() const noexcept { return relin_keys_ ? &*relin_keys_ : nullptr; }

        /** parms_id of the level fresh ciphertexts are encrypted at (all data primes). */
        const seal::parms_id_type &data_parms_id() const noexcept { return seal_context_->first_parms_id(); }
        double scale() const noexcept;
        std::size_t slot_count() const noexcept { return params_.poly_modulus_degree / 2; }

        const Digest &params_fingerprint() const noexcept { return params_fingerprint_; }
        const Digest &keyset_id() const noexcept { return keyset_id_; }

        /** True when other was made from the same parameters and the same key set. */
        bool same_keys_as(const PublicContext &other) const noexcept;

        /** Serialized form: hevit header (kind PublicContext) + parameters + public and Galois keys. */
        std::string to_bytes() const;

        /**
        Loads a serialized PublicContext. Validates parameters (security table included) and all
        sizes before allocating keys.

        @throws SerializationError, ParameterError
        */
        static std::shared_ptr<const PublicContext> from_bytes(std::string_view bytes);

        /** Canonical parameter encoding (also what the fingerprint hashes). */
        static std::string encode_params(const CkksParams &params, const seal::SEALContext &context);
        static CkksParams decode_params(ByteReader &reader);

    private:
        CkksParams params_;
        std::shared_ptr<const seal::SEALContext> seal_context_;
        std::unique_ptr<seal::CKKSEncoder> encoder_;
        seal::PublicKey public_key_;
        std::optional<seal::GaloisKeys> galois_keys_;
        std::vector<int> rotation_steps_;
        bool conjugation_ = false;
        std::optional<seal::RelinKeys> relin_keys_;
        Digest params_fingerprint_{};
        Digest keyset_id_{};
    };
} // namespace hevit

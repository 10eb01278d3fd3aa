// Copyright (c) hevit developers. MIT license.
#pragma once

#include "seal/seal.h"
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hevit::detail
{
    /**
    SEAL key objects in hevit's own format, so that SEAL's loader never sees untrusted bytes.

    SEAL 4.1.2's load() trusts the sizes an object declares (a size bound of 0 means unbounded,
    seeded keys are expanded before any check), so a few hundred hostile bytes could make it
    allocate gigabytes. Here every key is the coefficients of its polynomials, bit-packed to each
    prime's width, in an order fixed by the parameters: a public key is one key-level ciphertext
    of two polynomials; Galois keys are, for each Galois element in the given order, one such
    ciphertext per data prime; relinearisation keys likewise for one element; a secret key is
    one key-level polynomial (NTT form). Sizes follow from the context (and the element list),
    never from the bytes: a decoder checks the byte count first, then allocates exactly the
    honest object and refuses any coefficient that is not reduced modulo its prime.
    */

    /** The Galois elements of the sorted, distinct rotation steps, then complex conjugation
    (2N - 1) when asked: the order in which Galois keys are generated and encoded. */
    std::vector<std::uint32_t> galois_elements(
        const seal::SEALContext &context, const std::vector<int> &steps, bool conjugation);

    /** Bytes of one key-level polynomial (all primes, special prime included), bit-packed. */
    std::size_t key_poly_bytes(const seal::SEALContext &context) noexcept;

    std::string encode_public_key(const seal::PublicKey &key, const seal::SEALContext &context);

    /** @throws SerializationError if bytes are not exactly one encoded public key */
    seal::PublicKey decode_public_key(std::string_view bytes, const seal::SEALContext &context);

    /** Galois keys for exactly elements, in that order. */
    std::string encode_galois_keys(
        const seal::GaloisKeys &keys, const std::vector<std::uint32_t> &elements, const seal::SEALContext &context);

    /** @throws SerializationError if bytes are not exactly the keys of elements */
    seal::GaloisKeys decode_galois_keys(
        std::string_view bytes, const std::vector<std::uint32_t> &elements, const seal::SEALContext &context);

    std::string encode_relin_keys(const seal::RelinKeys &keys, const seal::SEALContext &context);

    /** @throws SerializationError if bytes are not exactly one encoded set of relinearisation keys */
    seal::RelinKeys decode_relin_keys(std::string_view bytes, const seal::SEALContext &context);

    std::string encode_secret_key(const seal::SecretKey &key, const seal::SEALContext &context);

    /**
    @throws SerializationError if bytes are not exactly one encoded secret key, or if its limbs are
    not one and the same ternary polynomial in every prime (check_ternary_key)
    */
    seal::SecretKey decode_secret_key(std::string_view bytes, const seal::SEALContext &context);

    /**
    Checks that every limb of key (NTT form, key level: the special prime's limb included) is the
    same polynomial with coefficients in {-1, 0, 1}. Decryption at the data level never reads the
    special prime's limb, so a check by decryption alone lets a corrupted limb through.

    @throws SerializationError otherwise
    */
    void check_ternary_key(const seal::SecretKey &key, const seal::SEALContext &context);

    /**
    Largest |e_i| accepted in p0 + p1 s = -e for a key pair. SEAL samples e from a centred
    binomial (or clipped normal) distribution of std 3.2 whose values never exceed 21 in magnitude;
    a foreign key, or one wrong in any limb, gives values spread over the whole prime.
    */
    constexpr std::uint64_t max_public_key_noise = 64;

    /**
    Checks that key is the secret key of public_key at the key level, in every prime: p0 + p1 s
    has coefficients of magnitude at most max_public_key_noise.

    @throws SerializationError otherwise
    */
    void check_key_pair(const seal::SecretKey &key, const seal::PublicKey &public_key, const seal::SEALContext &context);
} // namespace hevit::detail

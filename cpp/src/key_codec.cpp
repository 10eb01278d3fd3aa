// Copyright (c) hevit developers. MIT license.
#include "hevit/key_codec.h"
#include "hevit/errors.h"
#include "hevit/modular.h"
#include "hevit/wire.h"
#include "seal/util/polyarithsmallmod.h"
#include <algorithm>
#include <string>

namespace hevit::detail
{
    namespace
    {
        const seal::SEALContext::ContextData &key_level(const seal::SEALContext &context)
        {
            return *context.key_context_data();
        }

        /** Appends the polynomials of a key-level ciphertext. */
        void append_ciphertext(std::string &out, const seal::Ciphertext &ct, const seal::SEALContext &context)
        {
            const auto &cd = key_level(context);
            const std::size_t n = cd.parms().poly_modulus_degree();
            const auto &primes = cd.parms().coeff_modulus();
            for (std::size_t poly = 0; poly < ct.size(); poly++)
            {
                for (std::size_t l = 0; l < primes.size(); l++)
                {
                    const std::size_t at = out.size();
                    out.resize(at + packed_size(n, primes[l].bit_count()));
                    pack_bits(
                        ct.data(poly) + l * n, n, primes[l].bit_count(), reinterpret_cast<std::uint8_t *>(&out[at]));
                }
            }
        }

        /** Reads one key-level ciphertext of two polynomials at src (bytes already counted). */
        void read_ciphertext(const std::uint8_t *&src, seal::Ciphertext &ct, const seal::SEALContext &context)
        {
            const auto &cd = key_level(context);
            const std::size_t n = cd.parms().poly_modulus_degree();
            const auto &primes = cd.parms().coeff_modulus();
            ct.resize(context, context.key_parms_id(), 2);
            ct.is_ntt_form() = true;
            for (std::size_t poly = 0; poly < 2; poly++)
            {
                for (std::size_t l = 0; l < primes.size(); l++)
                {
                    if (!unpack_bits(src, n, primes[l].bit_count(), primes[l].value(), ct.data(poly) + l * n))
                    {
                        throw SerializationError("corrupted key: a coefficient is not reduced modulo its prime");
                    }
                    src += packed_size(n, primes[l].bit_count());
                }
            }
        }

        void expect_size(std::string_view bytes, std::size_t expected, const char *what)
        {
            if (bytes.size() != expected)
            {
                throw SerializationError(
                    std::string("corrupted ") + what + ": " + std::to_string(bytes.size()) + " bytes, these parameters give " +
                    std::to_string(expected));
            }
        }

        std::size_t decomposition_count(const seal::SEALContext &context)
        {
            return key_level(context).parms().coeff_modulus().size() - 1;
        }

        void append_switching_key(std::string &out, const std::vector<seal::PublicKey> &key, const seal::SEALContext &context)
        {
            if (key.size() != decomposition_count(context))
            {
                throw SerializationError("key-switching key of unexpected size");
            }
            for (const auto &part : key)
            {
                append_ciphertext(out, part.data(), context);
            }
        }

        std::vector<seal::PublicKey> read_switching_key(const std::uint8_t *&src, const seal::SEALContext &context)
        {
            std::vector<seal::PublicKey> key(decomposition_count(context));
            for (auto &part : key)
            {
                read_ciphertext(src, part.data(), context);
                part.parms_id() = context.key_parms_id();
            }
            return key;
        }
    } // namespace

    std::vector<std::uint32_t> galois_elements(
        const seal::SEALContext &context, const std::vector<int> &steps, bool conjugation)
    {
        std::vector<int> sorted(steps);
        std::sort(sorted.begin(), sorted.end());
        sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
        const auto galois_tool = context.key_context_data()->galois_tool();
        std::vector<std::uint32_t> elements;
        for (int step : sorted)
        {
            elements.push_back(galois_tool->get_elt_from_step(step));
        }
        if (conjugation)
        {
            elements.push_back(galois_tool->get_elt_from_step(0)); // 2N - 1: complex conjugation
        }
        return elements;
    }

    std::size_t key_poly_bytes(const seal::SEALContext &context) noexcept
    {
        const auto &cd = key_level(context);
        std::size_t bytes = 0;
        for (const auto &q : cd.parms().coeff_modulus())
        {
            bytes += packed_size(cd.parms().poly_modulus_degree(), q.bit_count());
        }
        return bytes;
    }

    std::string encode_public_key(const seal::PublicKey &key, const seal::SEALContext &context)
    {
        std::string out;
        append_ciphertext(out, key.data(), context);
        return out;
    }

    seal::PublicKey decode_public_key(std::string_view bytes, const seal::SEALContext &context)
    {
        expect_size(bytes, 2 * key_poly_bytes(context), "public key");
        seal::PublicKey key;
        const auto *src = reinterpret_cast<const std::uint8_t *>(bytes.data());
        read_ciphertext(src, key.data(), context);
        key.parms_id() = context.key_parms_id();
        return key;
    }

    std::string encode_galois_keys(
        const seal::GaloisKeys &keys, const std::vector<std::uint32_t> &elements, const seal::SEALContext &context)
    {
        std::string out;
        for (std::uint32_t element : elements)
        {
            append_switching_key(out, keys.key(element), context);
        }
        return out;
    }

    seal::GaloisKeys decode_galois_keys(
        std::string_view bytes, const std::vector<std::uint32_t> &elements, const seal::SEALContext &context)
    {
        const std::size_t per_key = decomposition_count(context) * 2 * key_poly_bytes(context);
        expect_size(bytes, elements.size() * per_key, "Galois keys");
        seal::GaloisKeys keys;
        keys.data().resize(key_level(context).parms().poly_modulus_degree());
        keys.parms_id() = context.key_parms_id();
        const auto *src = reinterpret_cast<const std::uint8_t *>(bytes.data());
        for (std::uint32_t element : elements)
        {
            const std::size_t index = seal::GaloisKeys::get_index(element);
            if (index >= keys.data().size() || !keys.data()[index].empty())
            {
                throw SerializationError("corrupted Galois keys: an element is out of range or repeated");
            }
            keys.data()[index] = read_switching_key(src, context);
        }
        return keys;
    }

    std::string encode_relin_keys(const seal::RelinKeys &keys, const seal::SEALContext &context)
    {
        std::string out;
        append_switching_key(out, keys.key(2), context);
        return out;
    }

    seal::RelinKeys decode_relin_keys(std::string_view bytes, const seal::SEALContext &context)
    {
        expect_size(bytes, decomposition_count(context) * 2 * key_poly_bytes(context), "relinearisation keys");
        seal::RelinKeys keys;
        keys.data().resize(1);
        keys.parms_id() = context.key_parms_id();
        const auto *src = reinterpret_cast<const std::uint8_t *>(bytes.data());
        keys.data()[0] = read_switching_key(src, context);
        return keys;
    }

    std::string encode_secret_key(const seal::SecretKey &key, const seal::SEALContext &context)
    {
        const auto &cd = key_level(context);
        const std::size_t n = cd.parms().poly_modulus_degree();
        const auto &primes = cd.parms().coeff_modulus();
        std::string out(key_poly_bytes(context), '\0');
        auto *dst = reinterpret_cast<std::uint8_t *>(out.data());
        for (std::size_t l = 0; l < primes.size(); l++)
        {
            pack_bits(key.data().data() + l * n, n, primes[l].bit_count(), dst);
            dst += packed_size(n, primes[l].bit_count());
        }
        return out;
    }

    seal::SecretKey decode_secret_key(std::string_view bytes, const seal::SEALContext &context)
    {
        expect_size(bytes, key_poly_bytes(context), "secret key");
        const auto &cd = key_level(context);
        const std::size_t n = cd.parms().poly_modulus_degree();
        const auto &primes = cd.parms().coeff_modulus();
        seal::SecretKey key;
        key.data().resize(n * primes.size());
        key.data().parms_id() = context.key_parms_id();
        const auto *src = reinterpret_cast<const std::uint8_t *>(bytes.data());
        for (std::size_t l = 0; l < primes.size(); l++)
        {
            if (!unpack_bits(src, n, primes[l].bit_count(), primes[l].value(), key.data().data() + l * n))
            {
                throw SerializationError("corrupted secret key: a coefficient is not reduced modulo its prime");
            }
            src += packed_size(n, primes[l].bit_count());
        }
        check_ternary_key(key, context);
        return key;
    }

    void check_ternary_key(const seal::SecretKey &key, const seal::SEALContext &context)
    {
        const auto &cd = key_level(context);
        const std::size_t n = cd.parms().poly_modulus_degree();
        const auto &primes = cd.parms().coeff_modulus();
        if (key.data().coeff_count() != n * primes.size())
        {
            throw SerializationError("corrupted secret key: wrong number of coefficients");
        }
        std::vector<std::int8_t> first(n);
        std::vector<std::uint64_t> residue(n);
        bool ok = true;
        for (std::size_t l = 0; l < primes.size() && ok; l++)
        {
            std::copy_n(key.data().data() + l * n, n, residue.begin());
            inverse_ntt(residue.data(), cd.small_ntt_tables()[l]);
            const std::uint64_t q = primes[l].value();
            for (std::size_t i = 0; i < n; i++)
            {
                const std::uint64_t r = residue[i];
                const std::int8_t t = r == 0 ? 0 : (r == 1 ? 1 : (r == q - 1 ? -1 : 2));
                // every limb must hold the same ternary polynomial: a limb that no decryption at
                // the data level reads (the special prime's) is checked like the others
                if (t == 2 || (l > 0 && t != first[i]))
                {
                    ok = false;
                    break;
                }
                if (l == 0)
                {
                    first[i] = t;
                }
            }
        }
        std::fill(residue.begin(), residue.end(), 0);
        std::fill(first.begin(), first.end(), 0);
        if (!ok)
        {
            throw SerializationError(
                "corrupted secret key: its limbs are not one ternary polynomial in every prime");
        }
    }

    void check_key_pair(const seal::SecretKey &key, const seal::PublicKey &public_key, const seal::SEALContext &context)
    {
        const auto &cd = key_level(context);
        const std::size_t n = cd.parms().poly_modulus_degree();
        const auto &primes = cd.parms().coeff_modulus();
        const seal::Ciphertext &pk = public_key.data();
        if (pk.size() != 2 || pk.coeff_modulus_size() != primes.size() || pk.poly_modulus_degree() != n)
        {
            throw SerializationError("corrupted public key: not a key-level ciphertext of two polynomials");
        }
        std::vector<std::uint64_t> e(n);
        bool ok = true;
        for (std::size_t l = 0; l < primes.size() && ok; l++)
        {
            const seal::Modulus &q = primes[l];
            // p0 + p1 s = -e at the key level (all primes): small only for the key that made p
            seal::util::dyadic_product_coeffmod(pk.data(1) + l * n, key.data().data() + l * n, n, q, e.data());
            seal::util::add_poly_coeffmod(e.data(), pk.data(0) + l * n, n, q, e.data());
            inverse_ntt(e.data(), cd.small_ntt_tables()[l]);
            for (std::size_t i = 0; i < n; i++)
            {
                const std::uint64_t magnitude = std::min(e[i], q.value() - e[i]);
                if (magnitude > max_public_key_noise)
                {
                    ok = false;
                    break;
                }
            }
        }
        std::fill(e.begin(), e.end(), 0);
        if (!ok)
        {
            throw SerializationError("corrupted SecretContext: the secret key does not belong to its public key");
        }
    }
} // namespace hevit::detail

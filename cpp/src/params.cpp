// Copyright (c) hevit developers. MIT license.
#include "hevit/params.h"
#include "hevit/modular.h"
#include "hevit/errors.h"
#include <cmath>
#include <numeric>
#include <sstream>

namespace hevit
{
    int max_secure_coeff_modulus_bits(std::size_t n) noexcept
    {
        switch (n)
        {
        case 1024:
            return 27;
        case 2048:
            return 54;
        case 4096:
            return 109;
        case 8192:
            return 218;
        case 16384:
            return 438;
        case 32768:
            return 881;
        default:
            return 0;
        }
    }

    bool is_valid_rotation_step(const CkksParams &params, std::int64_t step) noexcept
    {
        const auto slots = static_cast<std::int64_t>(params.poly_modulus_degree / 2);
        return step != 0 && step > -slots && step < slots;
    }

    std::size_t data_prime_count(const CkksParams &params) noexcept
    {
        const std::size_t k = params.coeff_modulus_bits.size();
        return k > 1 ? k - 1 : k;
    }

    namespace
    {
        std::string proposal(std::size_t n)
        {
            std::ostringstream out;
            out << "for example CkksParams(poly_modulus_degree=" << n << ", coeff_modulus_bits=";
            switch (n)
            {
            case 1024:
                out << "(27,), scale_bits=12)";
                break;
            case 2048:
                out << "(54,), scale_bits=20)";
                break;
            case 4096:
                out << "(39, 30, 40), scale_bits=27)";
                break;
            case 8192:
                out << "(60, 40, 60), scale_bits=40)";
                break;
            default:
                out << "(60, 40, 60), scale_bits=40) with poly_modulus_degree=8192";
            }
            return out.str();
        }
    } // namespace

    void validate_params(const CkksParams &params)
    {
        const std::size_t n = params.poly_modulus_degree;
        const int limit = max_secure_coeff_modulus_bits(n);
        if (limit == 0)
        {
            std::ostringstream out;
            out << "poly_modulus_degree=" << n
                << " is not supported: use a power of two from 1024 to 32768 (smaller rings are insecure)";
            throw ParameterError(out.str());
        }
        if (params.coeff_modulus_bits.empty())
        {
            throw ParameterError("coeff_modulus_bits is empty; " + proposal(n));
        }
        for (int bits : params.coeff_modulus_bits)
        {
            if (bits < 20 || bits > 60)
            {
                throw ParameterError(
                    "every prime of coeff_modulus_bits must have 20 to 60 bits, got " + std::to_string(bits) +
                    "; " + proposal(n));
            }
        }
        const int total = std::accumulate(params.coeff_modulus_bits.begin(), params.coeff_modulus_bits.end(), 0);
        if (total > limit)
        {
            std::ostringstream out;
            out << "insecure parameters: coeff_modulus_bits sum to " << total << " bits but N=" << n
                << " allows at most " << limit << " bits for 128-bit security (HomomorphicEncryption.org table); "
                << proposal(n);
            throw ParameterError(out.str());
        }
        if (!(params.max_norm > 0.0) || !std::isfinite(params.max_norm))
        {
            throw ParameterError("max_norm must be a positive finite bound on the L2 norm of each sample");
        }
        int data_bits = 0;
        for (std::size_t i = 0; i < data_prime_count(params); i++)
        {
            data_bits += params.coeff_modulus_bits[i];
        }
        // Encoded values must stay below half the data modulus with a bit to spare: scale * max_norm
        // * sqrt(2) (canonical embedding of a complex slot) < q / 4.
        const double needed = params.scale_bits + std::log2(params.max_norm) + detail::headroom_bits;
        if (params.scale_bits < 10 || needed > data_bits)
        {
            std::ostringstream out;
            out << "unusable parameters: scale_bits=" << params.scale_bits << " with max_norm=" << params.max_norm
                << " needs at least " << std::ceil(needed) << " bits of data modulus but there are " << data_bits
                << " (scale_bits must be >= 10); lower scale_bits or max_norm, or " << proposal(n);
            throw ParameterError(out.str());
        }
    }
} // namespace hevit

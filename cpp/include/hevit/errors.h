// Copyright (c) hevit developers. MIT license.
#pragma once

#include <stdexcept>
#include <string>

/**
Error types thrown by the hevit C++ core. Each derives from std::invalid_argument when it reports
bad input (the caller can fix it), so that generic handlers still see an invalid argument. The
Python bindings translate each type into the matching class of hevit.errors.
*/
namespace hevit
{
    /** Parameters that are insecure (above the HomomorphicEncryption.org 128-bit table) or unusable. */
    class ParameterError : public std::invalid_argument
    {
    public:
        using std::invalid_argument::invalid_argument;
    };

    /** Input values that are NaN/inf or too large for the chosen scale and value bound. */
    class ValueRangeError : public std::invalid_argument
    {
    public:
        using std::invalid_argument::invalid_argument;
    };

    /** Wrong shape, dimension or slot layout for the requested operation. */
    class LayoutError : public std::invalid_argument
    {
    public:
        using std::invalid_argument::invalid_argument;
    };

    /** Objects made under different parameters or key sets were combined. */
    class ContextMismatchError : public std::invalid_argument
    {
    public:
        using std::invalid_argument::invalid_argument;
    };

    /** Bytes that are truncated, corrupted, of the wrong kind or of an unsupported version. */
    class SerializationError : public std::invalid_argument
    {
    public:
        using std::invalid_argument::invalid_argument;
    };

    /** An evaluation key (Galois key for a rotation step) that a plan needs is not in the context. */
    class MissingKeyError : public std::invalid_argument
    {
    public:
        using std::invalid_argument::invalid_argument;
    };

    /** An operation that needs the secret key was asked of an object that holds none. */
    class SecretKeyRequiredError : public std::logic_error
    {
    public:
        using std::logic_error::logic_error;
    };

    /** A resource request past hevit's documented limits, or one the system refused (threads). */
    class ResourceError : public std::runtime_error
    {
    public:
        using std::runtime_error::runtime_error;
    };
} // namespace hevit

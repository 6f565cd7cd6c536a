# acsdk_tensorrt_version(<include dir> <out var>): TensorRT's "major.minor.patch" from NvInferVersion.h, or "" when
# the header is absent or unreadable. TensorRT 10 and 11 define NV_TENSORRT_MAJOR through TRT_MAJOR_ENTERPRISE;
# older headers define it as a number.
function(acsdk_tensorrt_version include_dir out_var)
  set(_file "${include_dir}/NvInferVersion.h")
  set(${out_var} "" PARENT_SCOPE)
  if(NOT EXISTS "${_file}")
    return()
  endif()
  file(STRINGS "${_file}" _lines REGEX "^#define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? +[0-9]+")
  set(_parts "")
  foreach(_part MAJOR MINOR PATCH)
    set(_value "")
    foreach(_line ${_lines})
      if(_line MATCHES "^#define (TRT_${_part}_ENTERPRISE|NV_TENSORRT_${_part}) +([0-9]+)")
        set(_value "${CMAKE_MATCH_2}")
      endif()
    endforeach()
    if(_value STREQUAL "")
      return()
    endif()
    list(APPEND _parts "${_value}")
  endforeach()
  string(REPLACE ";" "." _version "${_parts}")
  set(${out_var} "${_version}" PARENT_SCOPE)
endfunction()

# Which TensorRT majors the native runtime is written for (runtime/compat.py SUPPORTED_TRT_MAJORS).
set(ACSDK_TENSORRT_MAJORS 10 11)

# cmake -D... -P run.cmake (ctest native_install_consumer): native/README.md's install, run verbatim on a fresh
# configure of this source tree: `cmake -S . -B build` (no build type), `cmake --build build`, `cmake --install build
# --prefix P` (no --config). Then it checks what was installed (public headers only, no absolute RPATH in
# bin/acsdk-native), builds this folder's project against P as the README's "Use from your CMake project" shows
# (find_package(acsdk_native), acsdk::acsdk_native, no build type either) and runs one fixture image through it:
# OUT.png in the input's size.
# Inputs: SOURCE_ROOT WORK CONSUMER GENERATOR CXX_COMPILER PYTHON OpenVINO_DIR OV_LIB_DIR FIXTURES VERSION.
# WORK/build keeps its object files between runs (make rebuilds what changed) but never its CMakeCache.txt: every
# run configures from scratch, so a build type cached by an earlier run cannot hide a missing default.
cmake_minimum_required(VERSION 3.20)

# The README's commands take the generator, the compiler and the Python (which finds OpenVINO's wheel) from the
# environment: the ones this build used, set there, so that the command lines stay the README's.
get_filename_component(python_bin "${PYTHON}" DIRECTORY)
set(env ${CMAKE_COMMAND} -E env "CMAKE_GENERATOR=${GENERATOR}" "CXX=${CXX_COMPILER}" "PATH=${python_bin}:$ENV{PATH}")

function(run what)
  string(REPLACE ";" " " shown "${ARGN}")
  message(STATUS "${what}: ${shown}")
  execute_process(COMMAND ${env} ${ARGN} WORKING_DIRECTORY "${SOURCE_ROOT}" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}): ${shown}")
  endif()
endfunction()

# The PNG's width and height from its IHDR chunk (bytes 16..23, big-endian).
function(png_size file out)
  file(READ "${file}" hex LIMIT 24 HEX)
  string(SUBSTRING "${hex}" 0 16 signature)
  if(NOT signature STREQUAL "89504e470d0a1a0a")
    message(FATAL_ERROR "${file} is not a PNG")
  endif()
  string(SUBSTRING "${hex}" 32 8 w)
  string(SUBSTRING "${hex}" 40 8 h)
  math(EXPR w "0x${w}")
  math(EXPR h "0x${h}")
  set(${out} "${h} x ${w}" PARENT_SCOPE)
endfunction()

set(build "${WORK}/build")
set(prefix "${WORK}/prefix")
set(consumer_build "${WORK}/consumer-build")
file(REMOVE_RECURSE "${prefix}" "${consumer_build}" "${WORK}/out.png" "${WORK}/out_mask.png")
file(REMOVE "${build}/CMakeCache.txt")

# native/README.md, verbatim (with WORK/build for build and WORK/prefix for /opt/acsdk).
run("configure" ${CMAKE_COMMAND} -S . -B "${build}")
run("build" ${CMAKE_COMMAND} --build "${build}")
run("install" ${CMAKE_COMMAND} --install "${build}" --prefix "${prefix}")

file(GLOB per_config RELATIVE "${prefix}/lib/cmake/acsdk_native" "${prefix}/lib/cmake/acsdk_native/acsdk_nativeTargets-*.cmake")
message(STATUS "lib/cmake/acsdk_native: the targets of configuration(s) '${per_config}'")

# Public headers only: each installed header's own includes resolve inside include/acsdk/ (the consumer's build
# below compiles them); the internal ones stay out.
foreach(internal cpu.hpp files.hpp imageops.hpp safetensors.hpp torch_rng.hpp)
  if(EXISTS "${prefix}/include/acsdk/${internal}")
    message(FATAL_ERROR "internal header installed: include/acsdk/${internal}")
  endif()
endforeach()
file(GLOB headers RELATIVE "${prefix}/include/acsdk" "${prefix}/include/acsdk/*")
message(STATUS "include/acsdk: ${headers}")

# bin/acsdk-native: no absolute RPATH/RUNPATH (the venv's OpenVINO is found through LD_LIBRARY_PATH).
file(READ_ELF "${prefix}/bin/acsdk-native" RPATH rpath RUNPATH runpath CAPTURE_ERROR elf_error)
if(elf_error)
  message(FATAL_ERROR "bin/acsdk-native: ${elf_error}")
endif()
message(STATUS "bin/acsdk-native: RPATH '${rpath}' RUNPATH '${runpath}'")
string(REPLACE ":" ";" entries "${rpath}:${runpath}")
foreach(entry ${entries})
  if(NOT entry MATCHES "^\\$ORIGIN")
    message(FATAL_ERROR "bin/acsdk-native: search path '${entry}' is not relative to $ORIGIN")
  endif()
endforeach()
set(ld ${CMAKE_COMMAND} -E env "LD_LIBRARY_PATH=${OV_LIB_DIR}")
run("installed acsdk-native --version" ${ld} "${prefix}/bin/acsdk-native" --version)

# The outside project, as the README shows it: the prefix and OpenVINO's CMake dir, no build type, no --config.
run("consumer configure" ${CMAKE_COMMAND} -S "${CONSUMER}" -B "${consumer_build}" "-DCMAKE_PREFIX_PATH=${prefix}"
  "-DOpenVINO_DIR=${OpenVINO_DIR}" "-DREQUIRE_VERSION=${VERSION}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
run("consumer build" ${CMAKE_COMMAND} --build "${consumer_build}")

set(consumer "${consumer_build}/consumer")
if(NOT EXISTS "${consumer}")
  message(FATAL_ERROR "the consumer's build made no ${consumer}")
endif()
set(out "${WORK}/out.png")
run("consumer run" ${ld} "${consumer}" "${FIXTURES}/engines/tiny" "${FIXTURES}/banks/tiny_plain"
  "${FIXTURES}/inputs/rgb64.png" "${FIXTURES}/inputs/rgb64_mask.png" "${out}")
if(NOT EXISTS "${out}")
  message(FATAL_ERROR "the consumer wrote no ${out}")
endif()
png_size("${FIXTURES}/inputs/rgb64.png" in_size)
png_size("${out}" out_size)
if(NOT in_size STREQUAL out_size)
  message(FATAL_ERROR "out.png is ${out_size}, the input ${in_size}")
endif()
message(STATUS "out.png: ${out_size}, the input's size")

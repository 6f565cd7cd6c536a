# cmake -D... -P run.cmake (ctest native_install_consumer): installs this build into WORK/prefix, checks what was
# installed (public headers only, no absolute RPATH in bin/acsdk-native), then builds this folder's project against
# the prefix with find_package(acsdk_native) and runs one fixture image through it: OUT.png in the input's size.
# Inputs: BUILD_DIR CONFIG WORK SOURCE GENERATOR MAKE_PROGRAM CXX_COMPILER OpenVINO_DIR nlohmann_json_DIR OV_LIB_DIR
# FIXTURES VERSION.
cmake_minimum_required(VERSION 3.20)

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}): ${ARGN}")
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

set(prefix "${WORK}/prefix")
file(REMOVE_RECURSE "${WORK}")
run("install" ${CMAKE_COMMAND} --install "${BUILD_DIR}" --config "${CONFIG}" --prefix "${prefix}")

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
set(env ${CMAKE_COMMAND} -E env "LD_LIBRARY_PATH=${OV_LIB_DIR}")
run("installed acsdk-native --version" ${env} "${prefix}/bin/acsdk-native" --version)

set(build "${WORK}/build")
set(make_program)
if(MAKE_PROGRAM)
  set(make_program "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
run("consumer configure" ${CMAKE_COMMAND} -S "${SOURCE}" -B "${build}" -G "${GENERATOR}" ${make_program}
  "-DCMAKE_BUILD_TYPE=${CONFIG}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_PREFIX_PATH=${prefix}"
  "-DOpenVINO_DIR=${OpenVINO_DIR}" "-Dnlohmann_json_DIR=${nlohmann_json_DIR}" "-DREQUIRE_VERSION=${VERSION}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
run("consumer build" ${CMAKE_COMMAND} --build "${build}" --config "${CONFIG}")

set(consumer "${build}/consumer")
if(NOT EXISTS "${consumer}")
  set(consumer "${build}/${CONFIG}/consumer")  # multi-config generators
endif()
set(out "${WORK}/out.png")
run("consumer run" ${env} "${consumer}" "${FIXTURES}/engines/tiny" "${FIXTURES}/banks/tiny_plain"
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

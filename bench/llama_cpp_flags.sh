# Sourced by install_peer.sh and build_llama_server.sh: compiler flags for building llama.cpp.
#
# llama.cpp compiles its AMX kernels wherever `-march=native` finds AMX, and on this
# benchmark's machine (an Intel Xeon with AMX and AVX10.1) they die on their first matrix
# product: a general protection fault at `ldtilecfg` in ggml_backend_amx_mul_mat, in
# llama-cpp-python and llama-server alike (llama-cpp-python 0.3.36).  Without them llama.cpp
# runs its AVX-512 VNNI kernels, as on any CPU without AMX, so the peer is built without
# AMX wherever the compiler knows the flags.  CMake takes CFLAGS and CXXFLAGS from the
# environment when it configures a build.
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
if echo "" | "${CXX:-c++}" $NO_AMX -x c++ -E - >/dev/null 2>&1; then
    export CFLAGS="${CFLAGS:+$CFLAGS }$NO_AMX"
    export CXXFLAGS="${CXXFLAGS:+$CXXFLAGS }$NO_AMX"
fi

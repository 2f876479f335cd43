module vllm-hpc/bench/front

go 1.19

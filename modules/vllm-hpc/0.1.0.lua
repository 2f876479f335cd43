-- vllm-hpc 0.1.0 (Lmod). Usage: module use <repo>/modules; module load vllm-hpc
--
-- Puts the repo's bin/ (multi-node-serving.sh) and the CLI (vllm-hpc, from the
-- virtualenv made by `make install`) on PATH and tells the wrappers which Python to use.
-- Read when the module loads:
--   VLLM_HPC_VENV     the virtualenv with vllm-hpc (default <repo>/.venv)
--   VLLM_HPC_DEPENDS  modules to load first, e.g. "cuda/12.4 python/3.11" (space or
--                     comma separated). Named ones must exist; without it, "cuda" is
--                     loaded when the site has a module of that name and skipped if not;
--                     set it empty to load none.
-- Sites: set VLLM_HPC_SITE_CONFIG here, or put site.yaml in the repo root or /etc/vllm-hpc.

local version = "0.1.0"
-- <repo>/modules/vllm-hpc/0.1.0.lua -> <repo>
local root = myFileName():gsub("/modules/vllm%-hpc/[^/]+$", "")
local venv = os.getenv("VLLM_HPC_VENV") or pathJoin(root, ".venv")

whatis("Name: vllm-hpc")
whatis("Version: " .. version)
whatis("Description: vLLM's OpenAI-compatible server on SLURM (single GPU, TP, TP x PP over Ray, DP + EP)")
help([[
vllm-hpc: serve vLLM's OpenAI-compatible API on SLURM.
  vllm-hpc --help
  sbatch --export=ALL,MODEL=llama-3.2-3b-instruct $VLLM_HPC_ROOT/slurm/single_gpu.sbatch
Environment read at load: VLLM_HPC_VENV, VLLM_HPC_DEPENDS (see the modulefile).
]])

-- On unload, what the load recorded (so the same modules are released).
local explicit = os.getenv("VLLM_HPC_DEPENDS")
if mode() == "unload" then
  explicit = os.getenv("VLLM_HPC_DEPENDS_LOADED") or explicit
end
local loaded = {}
for name in (explicit or "cuda"):gmatch("[^%s,]+") do
  if explicit or isAvail(name) then
    depends_on(name)
    loaded[#loaded + 1] = name
  end
end
setenv("VLLM_HPC_DEPENDS_LOADED", table.concat(loaded, " "))

setenv("VLLM_HPC_ROOT", root)
prepend_path("PATH", pathJoin(root, "bin"))
-- Appended: vllm-hpc is found, but the site's python3 and pip stay first.
append_path("PATH", pathJoin(venv, "bin"))
setenv("VLLM_HPC_PYTHON", pathJoin(venv, "bin", "python"))

local site = pathJoin(root, "site.yaml")
if isFile(site) then
  setenv("VLLM_HPC_SITE_CONFIG", site)
elseif isFile("/etc/vllm-hpc/site.yaml") then
  setenv("VLLM_HPC_SITE_CONFIG", "/etc/vllm-hpc/site.yaml")
end

// specgen.mode "auto": the Jupyter server that the notebook's kernel runs on, found from the
// kernel itself. VS Code's Jupyter extension (ms-toolsai.jupyter) does not tell other extensions
// the URL or token of the server it is connected to, but its API runs code in a notebook's
// kernel (`kernels.getKernel(uri)`, then `kernel.executeCode(code, token)`, which yields the
// outputs to the caller and writes nothing to the notebook, its outputs or its execution count).
// A kernel started by a local Jupyter server can read what that server wrote in the Jupyter
// runtime dir: `jupyter_server.serverapp.list_running_servers()` reads its `jpserver-*.json`
// files (url, token, root_dir). FIND_SERVERS_CODE prints them, with the kernel's id (from its
// connection file, `kernel-<id>.json` when a server started it) and working directory, on one
// line of stdout; `findServer` parses it, asks each server over HTTP whether it runs
// jupyter-specgen (`GET specgen/personalize` answers) and that kernel (`GET api/kernels`), and
// picks, in this order: the server that runs the kernel; the one whose root_dir holds the
// notebook (the deepest); the one whose root_dir holds the kernel's working directory. Only
// servers running jupyter-specgen are picked. Null when none fits: extension.ts then uses
// specgen.jupyter.url and specgen.jupyter.token.
//
// The token travels only in that one stdout line, which the API hands to this extension and to
// no notebook; the snippet keeps no name in the kernel's namespace (everything is local to a
// function that it deletes), and nothing here logs the token or puts it in an error message.
//
// extension.ts passes the kernel as `execute` (plain data: outputs with mime-typed byte items, as
// the Jupyter extension's API gives them), so all of this runs under plain Node.

import * as path from 'node:path';

/** One output of a kernel execution, as the Jupyter extension's `Kernel.executeCode` yields it. */
export interface IKernelOutput {
  items: { mime: string; data: Uint8Array | string }[];
}

/** A Jupyter server's runtime file, as far as it is read here. */
export interface IRunningServer {
  /** Its URL, with its base_url (no trailing slash). */
  url: string;
  token: string;
  /** The folder it serves (absolute, on the kernel's machine); '' when the file has none. */
  rootDir: string;
}

/** What FIND_SERVERS_CODE reports from inside the kernel. */
export interface IKernelFindings {
  /** The kernel's id on the server that started it ('' for a kernel no server started). */
  kernelId: string;
  /** The kernel's working directory. */
  cwd: string;
  servers: IRunningServer[];
  /** Why the servers could not be listed ('' when they could). */
  error: string;
}

/** What a server said when asked (`probeServer`). */
export interface IProbe {
  /** It runs jupyter-specgen and took the token. */
  specgen: boolean;
  /** The ids of its kernels. */
  kernels: string[];
}

/** The server picked, and why (for the status bar's tooltip; no token in it). */
export interface IFoundServer {
  url: string;
  token: string;
  rootDir: string;
  why: string;
}

/** Starts the line FIND_SERVERS_CODE prints (the JSON follows it). */
export const FINDINGS_MARKER = '__specgen_servers__ ';

/**
 * Run in the notebook's kernel: prints FINDINGS_MARKER and a JSON object (kernel id, working
 * directory, the running servers' url, token and root_dir) on one line. Everything is local to
 * a function that is deleted afterwards, so the kernel's namespace keeps nothing.
 */
export const FIND_SERVERS_CODE = `def __specgen_find_servers():
    import json, os
    found = {"kernel": "", "cwd": os.getcwd(), "servers": [], "error": ""}
    try:
        from ipykernel import get_connection_file
        name = os.path.basename(get_connection_file())
        if name.startswith("kernel-") and name.endswith(".json"):
            found["kernel"] = name[len("kernel-"):-len(".json")]
    except Exception:
        pass
    try:
        from jupyter_server.serverapp import list_running_servers
        for info in list_running_servers():
            found["servers"].append({"url": info.get("url") or "", "token": info.get("token") or "",
                                     "root_dir": info.get("root_dir") or info.get("notebook_dir") or ""})
    except Exception as error:
        found["error"] = type(error).__name__ + ": " + str(error)
    print(${JSON.stringify(FINDINGS_MARKER)} + json.dumps(found), flush=True)
try:
    __specgen_find_servers()
finally:
    del __specgen_find_servers
`;

/** The findings in the outputs of FIND_SERVERS_CODE (its stdout line), or null when there are none. */
export function parseFindings(outputs: readonly IKernelOutput[]): IKernelFindings | null {
  const decoder = new TextDecoder();
  let text = '';
  for (const output of outputs) {
    for (const item of output?.items ?? []) {
      // stdout is application/vnd.code.notebook.stdout in VS Code; text/plain is taken too.
      if (item && /stdout|^text\/plain$/.test(item.mime)) {
        text += typeof item.data === 'string' ? item.data : decoder.decode(item.data);
      }
    }
  }
  const line = text.split(/\r?\n/).find(l => l.startsWith(FINDINGS_MARKER));
  if (!line) {
    return null;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(line.slice(FINDINGS_MARKER.length));
  } catch {
    return null;
  }
  const found = raw as { kernel?: unknown; cwd?: unknown; servers?: unknown; error?: unknown };
  const str = (value: unknown) => (typeof value === 'string' ? value : '');
  const servers = Array.isArray(found.servers) ? found.servers : [];
  return {
    kernelId: str(found.kernel),
    cwd: str(found.cwd),
    error: str(found.error),
    servers: servers
      .map((s: { url?: unknown; token?: unknown; root_dir?: unknown }) => ({
        url: str(s?.url).replace(/\/+$/, ''),
        token: str(s?.token),
        rootDir: str(s?.root_dir)
      }))
      .filter(s => /^https?:\/\//.test(s.url))
  };
}

/** Asks the server at `url` whether it runs jupyter-specgen, and which kernels it runs. */
export async function probeServer(url: string, token: string, timeoutMs = 3000): Promise<IProbe> {
  const headers: Record<string, string> = token ? { Authorization: `token ${token}` } : {};
  const get = async (route: string) => {
    try {
      return await fetch(`${url}/${route}`, { headers, signal: AbortSignal.timeout(timeoutMs) });
    } catch {
      return null; // not reachable from here
    }
  };
  const [specgen, kernels] = await Promise.all([get('specgen/personalize'), get('api/kernels')]);
  // 404: no jupyter-specgen there; 401/403: not this token. 503 is jupyter-specgen without its backend yet.
  const hasSpecgen = specgen !== null && specgen.status !== 404 && specgen.status !== 401 && specgen.status !== 403;
  let ids: string[] = [];
  if (kernels?.ok) {
    try {
      const list = (await kernels.json()) as { id?: unknown }[];
      ids = Array.isArray(list) ? list.map(k => (typeof k?.id === 'string' ? k.id : '')).filter(Boolean) : [];
    } catch {
      ids = [];
    }
  }
  return { specgen: hasSpecgen, kernels: ids };
}

/** Whether `dir` is `file` or holds it (absolute paths of one machine). */
export function holds(dir: string, file: string): boolean {
  if (!dir || !file) {
    return false;
  }
  const relative = path.relative(path.resolve(dir), path.resolve(file));
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

/**
 * The server of `findings` to use for the notebook at `notebookPath` (absolute, on the machine
 * where VS Code sees it): see the header for the order. `probe` is `probeServer` (tests may
 * pass another).
 */
export async function chooseServer(
  findings: IKernelFindings,
  notebookPath: string,
  probe: (url: string, token: string) => Promise<IProbe> = probeServer
): Promise<IFoundServer | null> {
  const probed = await Promise.all(findings.servers.map(async server => ({ server, probe: await probe(server.url, server.token) })));
  const usable = probed.filter(p => p.probe.specgen).map(p => ({ ...p.server, kernels: p.probe.kernels }));
  const pick = (server: IRunningServer, why: string): IFoundServer => ({ url: server.url, token: server.token, rootDir: server.rootDir, why });
  const own = findings.kernelId ? usable.find(s => s.kernels.includes(findings.kernelId)) : undefined;
  if (own) {
    return pick(own, "runs the notebook's kernel");
  }
  const deepest = (file: string) =>
    usable.filter(s => holds(s.rootDir, file)).sort((a, b) => path.resolve(b.rootDir).length - path.resolve(a.rootDir).length)[0];
  const byNotebook = deepest(notebookPath);
  if (byNotebook) {
    return pick(byNotebook, 'serves the folder of the notebook');
  }
  const byCwd = deepest(findings.cwd);
  return byCwd ? pick(byCwd, "serves the kernel's working directory") : null;
}

/**
 * Runs FIND_SERVERS_CODE through `execute` (the notebook's kernel) and picks the server; null when
 * the kernel gave no findings within `timeoutMs` (a busy kernel, no jupyter_server in its
 * environment) or no server fits.
 */
export async function findServer(options: {
  execute: (code: string) => AsyncIterable<IKernelOutput>;
  notebookPath: string;
  timeoutMs?: number;
  probe?: (url: string, token: string) => Promise<IProbe>;
}): Promise<IFoundServer | null> {
  const outputs: IKernelOutput[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<'timeout'>(resolve => {
    timer = setTimeout(() => resolve('timeout'), options.timeoutMs ?? 10_000);
  });
  let iterator: AsyncIterator<IKernelOutput> | null = null;
  let done = false;
  try {
    iterator = options.execute(FIND_SERVERS_CODE)[Symbol.asyncIterator]();
    while (!parseFindings(outputs)) {
      const next = await Promise.race([iterator.next(), timedOut]);
      if (next === 'timeout') {
        break;
      }
      if (next.done) {
        done = true;
        break;
      }
      outputs.push(next.value);
    }
  } catch {
    return null; // the kernel died, or refused: the settings' server then
  } finally {
    clearTimeout(timer);
    if (iterator && !done) {
      // Stop listening (the extension also cancels the execution's token).
      Promise.resolve(iterator.return?.(undefined)).catch(() => undefined);
    }
  }
  const findings = parseFindings(outputs);
  return findings ? chooseServer(findings, options.notebookPath, options.probe) : null;
}

/** `file` relative to `root` with '/' separators, when `root` holds it; else null. */
export function relativeTo(root: string, file: string): string | null {
  return root && holds(root, file) ? path.relative(path.resolve(root), path.resolve(file)).split(path.sep).join('/') : null;
}

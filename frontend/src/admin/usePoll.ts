import { useCallback, useEffect, useRef, useState } from "react";

/** Load now and again every `intervalMs` while mounted; `reload` forces a fetch after a change. */
export function usePoll<T>(
  load: () => Promise<T | undefined>,
  intervalMs: number,
  deps: unknown[],
): [T | undefined, () => void] {
  const [value, setValue] = useState<T | undefined>(undefined);
  const loadRef = useRef(load);
  loadRef.current = load;
  const reload = useCallback(() => {
    void loadRef.current().then((v) => {
      if (v !== undefined) setValue(v);
    });
  }, []);
  useEffect(() => {
    setValue(undefined);
    reload();
    if (intervalMs <= 0) return;
    const id = window.setInterval(reload, intervalMs);
    return () => window.clearInterval(id);
  }, [reload, intervalMs, ...deps]);
  return [value, reload];
}

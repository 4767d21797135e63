" .topo files are topoc lab topologies.
autocmd BufRead,BufNewFile *.topo setfiletype topo
